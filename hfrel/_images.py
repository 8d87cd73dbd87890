"""Reading images from disk the way users expect, and recovering the image the model saw.

Every reader in hfrel (CLI, evaluation, demo) goes through `load_image`, so EXIF orientation,
transparency, palettes and 16-bit files are handled once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hfrel._errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def load_image(path: str | Path) -> Image.Image:
    """An RGB image from a file: EXIF orientation applied; grayscale, palette, 16-bit and transparent
    images (composited on white) converted to 8-bit RGB. Raises InputError for a missing, corrupt or
    unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no image file at {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except UnidentifiedImageError as error:
        raise InputError(f"{path} is not an image file Pillow can read") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path} is a corrupt or truncated image ({error})") from error
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "F":
            top = 1.0 if array.max() <= 1.0 else float(array.max())
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the image files inside named folders (sorted, not recursive).

    A named path that does not exist raises InputError; files named directly are kept whatever
    their suffix (reading them reports what is wrong)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"no such file or folder: {path}")
    return found


def model_view(pixel_values: torch.Tensor, processor: object) -> torch.Tensor:
    """The images as the model saw them, in [0, 1]: the processor's normalisation undone.

    (B, 3, H, W) -> (B, 3, H, W); resizing and cropping are kept, so maps line up pixel for pixel.
    """
    pixels = pixel_values.detach().float().cpu()
    if getattr(processor, "do_normalize", False):
        mean = torch.as_tensor(processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        pixels = pixels * std + mean
    if getattr(processor, "do_rescale", True) is False:
        pixels = pixels / 255.0
    return pixels.clamp(0.0, 1.0)
