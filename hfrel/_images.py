"""Reading images from disk the way users expect, and relating a model's input back to the photo.

Every reader in hfrel (CLI, evaluation, demo) goes through `load_image`, so EXIF orientation,
transparency, palettes and 16-bit files are handled once. `model_view` and `to_original` are the
two ways to line a map up with a picture: on the image the model saw, or on the photo as loaded.
`model_views` and `image_inputs` do the same for NaFlex models (Siglip2), whose images each keep their own size.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.nn import functional as F

from hfrel._errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

# What Pillow's decoders raise on a malformed file (its plugins parse bytes with struct and index
# tables); anything else, MemoryError above all, is not the file's fault and is not caught.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    Image.DecompressionBombError,
)

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def load_image(path: str | Path) -> Image.Image:
    """An 8-bit RGB image from a file, upright and opaque.

    EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images are converted to RGB;
    transparency is composited on white (what a viewer shows, and what the model should see).
    Raises InputError for a missing, unreadable, corrupt, truncated or oversized file.
    """
    return to_rgb(open_upright(path, "image file at"))


def open_upright(path: str | Path, missing: str = "file at") -> Image.Image:
    """A picture file decoded whole, EXIF orientation applied, in its own mode (images and masks alike).

    Raises InputError for a missing ("no <missing> <path>"), unreadable, corrupt, truncated or
    oversized file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no {missing} {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except UnidentifiedImageError as error:
        raise InputError(f"{path} is not an image file Pillow can read (unsupported format or not an image)") from error
    except Image.DecompressionBombError as error:
        raise InputError(f"{path} is too large to read safely ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{path} is a corrupt or truncated image ({_first_line(error)})") from error
    except DECODE_ERRORS as error:  # a decoder failing its own way on a malformed file: still a bad file
        raise InputError(f"{path} could not be read ({type(error).__name__}: {_first_line(error)})") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency (alpha or a transparent colour) is composited on white.

    16-bit modes are scaled by 65535; 32-bit integer images ("I") by 255 when they hold 8-bit values
    and by 65535 when they hold 16-bit values (Pillow's older 16-bit PNG reading); float images ("F")
    are read as [0, 1] when they fit, else as [0, 255].
    """
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        image = Image.fromarray(_to_uint8(np.asarray(image), image.mode))
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    if image.mode == "P":
        image = image.convert("RGB")
    if image.mode in ("LA", "La"):
        image = image.convert("RGBA") if image.mode == "LA" else image.convert("LA").convert("RGBA")
    if image.mode in ("RGBA", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    values = array.astype(np.float64)
    if mode in _SIXTEEN_BIT:
        top = 65535.0
    elif mode == "I":
        top = 255.0 if values.max(initial=0) <= 255 else 65535.0
    else:  # "F"
        top = 1.0 if values.min(initial=0) >= 0 and values.max(initial=0) <= 1 else 255.0
    return np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# finding inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """An input that cannot be read, kept so a run over many inputs can report it and carry on."""

    input: str
    error: str


def find_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """The image files to read: files named directly, plus the image files inside named folders.

    Folders are read one level deep, sorted by name, by file suffix (`IMAGE_SUFFIXES`); files named
    directly are kept whatever their suffix (reading them says what is wrong). A file reached twice
    is kept once. Paths that do not exist, and folders without image files, come back as problems.
    """
    found: list[Path] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                problems.append(Problem(str(item), f"no image files in the folder {path} (looked for {suffixes})"))
        elif path.exists():
            files = [path]
        else:
            problems.append(Problem(str(item), f"no such file or folder: {path}"))
            continue
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append(file)
    return found, problems


def output_names(paths: Sequence[Path], reserved: Iterable[str] = ()) -> list[str]:
    """A file-system name per input, derived from its file name alone: the stem, unless two inputs
    share it (case-insensitively, e.g. a/cat.jpg and b/cat.png), then stem-<8 hex digits of the
    resolved path>. Each name depends only on its path and the list, never on order or batching."""
    taken = {name.casefold() for name in reserved}
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem.casefold()] = counts.get(path.stem.casefold(), 0) + 1
    names = []
    for path in paths:
        stem = path.stem
        if counts[stem.casefold()] > 1 or stem.casefold() in taken:
            stem = f"{stem}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        names.append(stem)
    return names


# what the model saw ----------------------------------------------------------------------------


def model_view(pixel_values: torch.Tensor, processor: Any) -> torch.Tensor:
    """The images as the model saw them, (B, 3, H, W) in [0, 1]: the processor's normalisation and
    rescaling undone, its resizing and cropping kept, so a heatmap lines up with it pixel for pixel."""
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
        got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise InputError(
            f"model_view takes pixel_values of shape (B, C, H, W); got {got}. NaFlex processors (Siglip2) return "
            f"patches (B, P, C*p*p): put each image back together from its spatial_shapes rows x cols patches first."
        )
    pixels = pixel_values.detach().float().cpu()
    if getattr(processor, "do_normalize", False):
        mean = torch.as_tensor(processor.image_mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.as_tensor(processor.image_std, dtype=torch.float32).reshape(1, -1, 1, 1)
        pixels = pixels * std + mean
    if getattr(processor, "do_rescale", False):
        pixels = pixels / (float(processor.rescale_factor) * 255.0)  # back to 0..255, then to [0, 1]
    else:
        pixels = pixels / 255.0
    return pixels.clamp(0.0, 1.0)


# NaFlex image processors (Siglip2) return, besides the patches, what the model needs to read them.
NAFLEX_INPUTS = ("pixel_attention_mask", "spatial_shapes")


def is_naflex_processor(processor: Any) -> bool:
    """Whether an image processor cuts each image into patches at its own aspect ratio (Siglip2's NaFlex)."""
    return "spatial_shapes" in (getattr(processor, "model_input_names", None) or ())


def check_naflex_processor(processor: Any, patch_layout: str, model_text: str) -> None:
    """A NaFlex model needs its NaFlex image processor (patches + spatial_shapes), and a grid model one that
    gives (B, C, H, W) pixels: refused up front, before any file is written, saying which processor fits."""
    image_processor = getattr(processor, "image_processor", processor)
    naflex = is_naflex_processor(image_processor)
    if patch_layout == "naflex" and not naflex:
        raise InputError(
            f"{model_text} is a NaFlex model: it takes each image cut into patches at its own aspect ratio, with "
            f"{' and '.join(NAFLEX_INPUTS)}; {type(image_processor).__name__} does not return those. Use the "
            f"checkpoint's own image processor (e.g. Siglip2ImageProcessor, or AutoProcessor.from_pretrained)."
        )
    if patch_layout != "naflex" and naflex:
        raise InputError(
            f"{type(image_processor).__name__} cuts images into NaFlex patches, but {model_text} takes (B, C, H, W) "
            f"pixels: use the checkpoint's own image processor (AutoImageProcessor.from_pretrained)."
        )


def image_inputs(outputs: Any, patch_layout: str) -> dict[str, torch.Tensor]:
    """What an image classifier takes from its image processor's outputs: pixel_values, and for a NaFlex
    model also each image's patch mask and grid (without them its patches cannot be read)."""
    keys = ("pixel_values", *NAFLEX_INPUTS) if patch_layout == "naflex" else ("pixel_values",)
    return {key: outputs[key] for key in keys if key in outputs}


def naflex_call_options(processor: Any) -> dict[str, Any]:
    """Keyword arguments that make a processor cut images as its image processor's own settings say.

    Siglip2Processor's call applies its class defaults (patch_size=16, max_num_patches=256) over its image
    processor's settings; passing those settings explicitly keeps the patches, the drawn view and the
    mapping back to the photo in agreement. {} for other processors."""
    image_processor = getattr(processor, "image_processor", processor)
    if not is_naflex_processor(image_processor):
        return {}
    return {"patch_size": image_processor.patch_size, "max_num_patches": image_processor.max_num_patches}


def model_views(inputs: Any, processor: Any) -> list[torch.Tensor]:
    """Each image as the model saw it, (3, H_b, W_b) in [0, 1]. NaFlex patches (with `spatial_shapes`) are put
    back together on the image's own grid, padding left out, so each map lines up with its own picture."""
    pixel_values = inputs["pixel_values"]
    shapes = inputs.get("spatial_shapes")
    if shapes is None:
        return list(model_view(pixel_values, processor).unbind(0))
    patch = _naflex_patch(processor)
    channels = pixel_values.shape[-1] // (patch * patch)
    views = []
    for index, (rows, cols) in enumerate(shapes.tolist()):  # per picture: each has its own size
        patches = pixel_values[index, : rows * cols].reshape(rows, cols, patch, patch, channels)
        image = patches.permute(4, 0, 2, 1, 3).reshape(1, channels, rows * patch, cols * patch)
        views.append(model_view(image, processor)[0])
    return views


def _naflex_patch(processor: Any) -> int:
    """The patch side in pixels of a NaFlex image processor (an int, or a {"height", "width"} square)."""
    patch = getattr(processor, "patch_size", None)
    if isinstance(patch, dict) or hasattr(patch, "height"):
        height = patch["height"] if isinstance(patch, dict) else patch.height
        width = patch["width"] if isinstance(patch, dict) else patch.width
        if height == width:
            patch = height
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise InputError(f"cannot read {type(processor).__name__}.patch_size={patch!r} as a square patch side")
    return patch


def _naflex_size(processor: Any, original: tuple[int, int]) -> tuple[int, int]:
    """The size a NaFlex processor resizes a photo to: the most patches up to max_num_patches at about the
    photo's aspect ratio, by transformers' own helper (the arithmetic the processor runs)."""
    from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

    if not getattr(processor, "do_resize", False):
        return original
    height, width = get_image_size_for_max_num_patches(
        image_height=original[0],
        image_width=original[1],
        patch_size=_naflex_patch(processor),
        max_num_patches=int(processor.max_num_patches),
    )
    return int(height), int(width)


@dataclass(frozen=True)
class _Geometry:
    """Where the model's input sits in the original photo, per axis (height, width).

    The processor resizes the photo from `original` to `resized`, then its input pixel (i, j) is the
    resized pixel (i + shift[0], j + shift[1]); only input pixels below `content` hold the photo
    (the rest is padding)."""

    original: tuple[int, int]
    resized: tuple[int, int]
    shift: tuple[int, int]
    content: tuple[int, int]


def _geometry(processor: Any, original: tuple[int, int], model_input: tuple[int, int]) -> _Geometry:
    """The resize / center-crop / pad geometry of a transformers image processor for one photo size.

    Follows the processors' own arithmetic (transformers' size helpers, their crop offsets) and checks
    the result against the size of the model's input, so a processor that does something else fails
    loudly instead of drawing maps in the wrong place.
    """
    from transformers.image_processing_backends import PilBackend, TorchvisionBackend

    kind = type(processor).__name__
    backend = next((b for b in (PilBackend, TorchvisionBackend) if isinstance(processor, b)), None)
    own = type(processor).__mro__[: type(processor).__mro__.index(backend)] if backend else ()
    overridden = [name for name in ("resize", "center_crop", "pad") if any(name in vars(c) for c in own)]
    if backend is None or overridden:
        why = f"it overrides {', '.join(overridden)}" if overridden else "it is not a transformers image processor"
        raise InputError(
            f"cannot map maps back to the original image through {kind}: {why}. hfrel knows the geometry of "
            f"transformers' standard processors (resize, then center crop); use the image the model saw instead."
        )
    height, width = original
    if is_naflex_processor(processor):  # the whole photo resized to its own patch grid: no crop, no padding
        resized = _naflex_size(processor, original)
        if resized != tuple(model_input):
            raise InputError(
                f"{kind} turns a {height}x{width} image into {resized[0]}x{resized[1]} pixels, but the map is "
                f"{model_input[0]}x{model_input[1]}: pass each image's own map (Explanation.image(i)) to map it back."
            )
        return _Geometry(original=original, resized=resized, shift=(0, 0), content=resized)
    resized = original
    if getattr(processor, "do_resize", False):
        resized = _resized_size(processor.size, original, kind)
    shift = (0, 0)
    content = resized
    if getattr(processor, "do_center_crop", False):
        crop = _size_dict(processor.crop_size)
        if not (crop.height and crop.width):
            raise InputError(f"{kind}.crop_size needs a height and a width to map back; got {dict(crop)}")
        content = (int(crop.height), int(crop.width))
        torchvision = backend is TorchvisionBackend
        shift = tuple(_crop_shift(n, c, torchvision) for n, c in zip(resized, content, strict=True))  # type: ignore[assignment]
    padded = bool(getattr(processor, "do_pad", False))
    fits = all(c <= m for c, m in zip(content, model_input, strict=True))
    if (padded and not fits) or (not padded and content != tuple(model_input)):
        raise InputError(
            f"{kind} turns a {height}x{width} image into {content[0]}x{content[1]} by hfrel's reading of its "
            f"settings, but the model's input is {model_input[0]}x{model_input[1]}: cannot map the map back."
        )
    return _Geometry(original=original, resized=resized, shift=shift, content=content)  # type: ignore[arg-type]


def _size_dict(size: Any) -> Any:
    from transformers.image_utils import SizeDict

    if isinstance(size, SizeDict):
        return size
    if isinstance(size, dict):
        return SizeDict(**size)
    if isinstance(size, int):
        return SizeDict(height=size, width=size)
    raise InputError(f"cannot read the image processor's size setting {size!r}")


def _resized_size(size: Any, original: tuple[int, int], kind: str) -> tuple[int, int]:
    """The size the processor resizes a photo of size `original` to: the same branches and helpers as
    transformers' PIL and torchvision backends use."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension, get_image_size_for_max_height_width

    size = _size_dict(size)
    if size.shortest_edge and size.longest_edge:
        new = get_size_with_aspect_ratio(original, size.shortest_edge, size.longest_edge)
    elif size.shortest_edge:
        stand_in = np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint8), (1, *original))  # only its shape is read
        new = get_resize_output_image_size(
            stand_in, size=size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
    elif size.max_height and size.max_width:
        new = get_image_size_for_max_height_width(original, size.max_height, size.max_width)
    elif size.height and size.width:
        new = (size.height, size.width)
    else:
        raise InputError(f"cannot read {kind}.size={dict(size)} to map maps back to the original image")
    return int(new[0]), int(new[1])


def _crop_shift(resized: int, crop: int, torchvision: bool) -> int:
    """Resized coordinate of the crop's first pixel along one axis (negative: the image was padded).

    Cropping inside the image, both backends start at floor((n - c) / 2). Padding a smaller image,
    the PIL backend puts the extra pixel before the image and torchvision after it."""
    if crop <= resized or not torchvision:
        return (resized - crop) // 2
    return -((crop - resized) // 2)


def to_original(heatmap: Any, image: Any, processor: Any) -> np.ndarray:
    """Heatmaps on the model's input, mapped onto the original photo: (..., H, W) -> (..., H0, W0).

    `image` is the photo as loaded (a PIL image, or an array whose first two axes are H0, W0);
    `processor` the image processor that made the model's input from it. Each photo pixel reads the
    map bilinearly at the place the processor moved it to; pixels the processor cropped away carry
    no map and are NaN (`hfrel.viz.overlay` leaves them uncoloured).
    """
    heat = torch.as_tensor(np.asarray(heatmap.detach().cpu() if isinstance(heatmap, torch.Tensor) else heatmap))
    heat = heat.float()
    if heat.dim() < 2:
        raise InputError(f"expected heatmaps of shape (..., H, W); got shape {tuple(heat.shape)}")
    original = (image.height, image.width) if isinstance(image, Image.Image) else tuple(np.shape(image)[:2])
    model_input = tuple(heat.shape[-2:])
    geometry = _geometry(processor, original, model_input)  # type: ignore[arg-type]
    axes = []
    for axis in range(2):
        count, resized, shift = geometry.original[axis], geometry.resized[axis], geometry.shift[axis]
        centres = (torch.arange(count, dtype=torch.float64) + 0.5) * (resized / count) - shift  # input coordinates
        inside = (centres >= 0) & (centres < geometry.content[axis])
        axes.append(((centres / model_input[axis]) * 2 - 1, inside))
    (rows, rows_in), (cols, cols_in) = axes
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1).float()  # (H0, W0, 2) as (x, y)
    flat = heat.reshape(-1, 1, *model_input)
    sampled = F.grid_sample(
        flat, grid.expand(flat.shape[0], -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=False
    )
    inside = rows_in[:, None] & cols_in[None, :]
    sampled = torch.where(inside, sampled[:, 0], torch.tensor(float("nan")))
    return sampled.reshape(*heat.shape[:-2], *geometry.original).numpy()
