"""Synthetic scenes with exact ground truth: coloured shapes on textured backgrounds, one mask per object.

Each class is a shape in its own family of hues (a disk is reddish, a ring yellowish, ...; the hue
varies by up to 18 degrees, saturation and brightness freely); size and place are drawn independently
of the class. Objects are drawn in saturated colours with hard edges on low-saturation textured
backgrounds, so the mask of an object is exactly the set of pixels painted in its colour.

Scene `i` of a seed is the same whatever `n` or `start` asked for it: scenes are drawn in fixed
blocks, each from its own generator derived from `(seed, block)`. Drawing is batched over the scenes
of a block (loops run over the K <= 3 objects and the six classes only).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hfrel._errors import InputError

CLASS_NAMES: tuple[str, ...] = ("disk", "ring", "square", "diamond", "triangle", "cross")
"""The object classes, in class-index order (the bundled model's `id2label`)."""

IMAGE_SIZE = 64
"""Default side of a scene, in pixels (the bundled model's input size)."""

MAX_OBJECTS = 3

_BLOCK = 64  # scenes drawn from one generator; fixed so that scene i never depends on n or start
# An object's half extent in pixels at size 64 (scaled with size), by objects per scene: three large
# objects rarely fit side by side in 64 pixels, so three-object scenes use the smaller part of the range.
_RADII = {1: (7.0, 12.0), 2: (7.0, 12.0), 3: (7.0, 9.5)}
_REACH = 1.25  # every shape lies within this many radii of its centre (the triangle's base corners)
_HUE_JITTER = 0.05  # of a full turn: 18 degrees either side of the class's hue, 24 degrees clear of the next
_GAP = 2.0  # pixels kept free between the bounding circles of two objects
_PLACEMENT_TRIES = 64  # layouts drawn at once per scene; drawn again for scenes where all of them collide


class SceneDataset(Dataset):
    """Scenes as tensors, and a `torch.utils.data.Dataset` of them.

    `images` (N, 3, H, W) float32 in [0, 1] (multiples of 1/255, so PNG export is lossless);
    `labels` (N, K) int64 class indices, one per object, distinct within a scene;
    `masks` (N, K, H, W) bool, the pixels of each object (disjoint).
    Item `i` is `(images[i], labels[i], masks[i])`.
    """

    class_names = CLASS_NAMES

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        n, _, h, w = images.shape
        if labels.dim() != 2 or labels.shape[0] != n:
            raise InputError(f"labels must be (N, K) with N={n}, got {tuple(labels.shape)}")
        if tuple(masks.shape) != (n, labels.shape[1], h, w):
            raise InputError(f"masks must be (N, K, H, W) = {(n, labels.shape[1], h, w)}, got {tuple(masks.shape)}")
        self.images = images
        self.labels = labels
        self.masks = masks

    @property
    def objects(self) -> int:
        """Objects per scene (K)."""
        return self.labels.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index], self.masks[index]

    def __repr__(self) -> str:
        size = "x".join(map(str, self.images.shape[-2:]))
        return f"SceneDataset({len(self)} scenes, {self.objects} object(s) each, {size})"

    def uint8(self) -> np.ndarray:
        """The images as (N, H, W, 3) uint8 arrays, exactly (they are multiples of 1/255)."""
        return _to_uint8(self.images)


def make_scenes(n: int, *, objects: int = 1, seed: int = 0, start: int = 0, size: int = IMAGE_SIZE) -> SceneDataset:
    """`n` scenes (indices `start` .. `start + n - 1` of `seed`), each with `objects` objects of distinct classes.

    Single-object scenes are for training; scenes with two or three objects are for testing whether
    a map is class-specific. Deterministic: the same arguments give the same tensors, and a scene's
    content depends only on `(seed, its index, objects, size)`.
    """
    _check_int("n", n, low=1)
    _check_int("objects", objects, low=1, high=MAX_OBJECTS)
    _check_int("seed", seed, low=0)
    _check_int("start", start, low=0)
    _check_int("size", size, low=32)
    first, last = start // _BLOCK, (start + n - 1) // _BLOCK
    parts = [_draw_block(seed, block, objects, size) for block in range(first, last + 1)]
    offset = start - first * _BLOCK
    images, labels, masks = (torch.cat(column)[offset : offset + n] for column in zip(*parts, strict=True))
    return SceneDataset(images, labels, masks)


def export_folder(scenes: SceneDataset, directory: str | Path, *, prefix: str = "scene") -> Path:
    """Write scenes in the evaluation folder format; returns `directory`.

    `images/<name>.png`, `masks/<name>.png` (255 on the object, 0 elsewhere) and `labels.csv`
    (`image,label`, the label a class name). A scene with K objects is written under K names,
    `<prefix>_0007_a.png`, `<prefix>_0007_b.png`, ..., each with its own object's mask and label.
    The folder must not exist or be empty; it is written aside and moved in place when complete.
    """
    from PIL import Image

    if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise InputError(f"prefix must be letters, digits, '_' or '-' (it starts every file name), got {prefix!r}")
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InputError(f"{directory} already exists and is not an empty folder; pick a new folder or empty it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.with_name(f".{directory.name}.partial")
    if partial.exists():
        raise InputError(f"{partial} is left from an interrupted export; delete it and export again")
    try:
        (partial / "images").mkdir(parents=True)
        (partial / "masks").mkdir()
        pixels = scenes.uint8()
        masks = scenes.masks.cpu().numpy()
        width = max(4, len(str(len(scenes) - 1)))
        rows = ["image,label"]
        for i, scene_labels in enumerate(scenes.labels.cpu().tolist()):
            image = Image.fromarray(pixels[i])
            for k, label in enumerate(scene_labels):
                name = f"{prefix}_{i:0{width}d}_{chr(ord('a') + k)}.png"
                image.save(partial / "images" / name)
                Image.fromarray(masks[i, k].astype(np.uint8) * 255).save(partial / "masks" / name)
                rows.append(f"{name},{CLASS_NAMES[label]}")
        (partial / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        if directory.exists():
            directory.rmdir()
        partial.rename(directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left behind
        raise
    return directory


# drawing ---------------------------------------------------------------------------------------


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise InputError(f"{name} must be {allowed}, got {value!r}")


def _generator(seed: int, block: int, objects: int, size: int) -> torch.Generator:
    """An independent stream per (seed, block, objects, size): numpy's SeedSequence mixes the words."""
    state = np.random.SeedSequence([seed, block, objects, size]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _draw_block(seed: int, block: int, objects: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block of `_BLOCK` scenes: background, then each object painted into its mask."""
    gen = _generator(seed, block, objects, size)
    b, k = _BLOCK, objects
    labels = torch.rand((b, len(CLASS_NAMES)), generator=gen).argsort(dim=1)[:, :k]  # distinct per scene
    scale = size / IMAGE_SIZE
    low, high = _RADII[k]
    radii = _uniform(gen, (b, k), low * scale, high * scale)
    centres = _place(gen, radii, size)
    colours = _class_colours(gen, labels)
    images = _background(gen, b, size)
    masks = _shape_masks(labels, centres, radii, size)
    for obj in range(k):  # K <= 3 objects: a loop over objects, batched over scenes
        images = torch.where(masks[:, obj, None], colours[:, obj, :, None, None], images)
    images = torch.round(images * 255.0) / 255.0
    return images, labels, masks


def _place(gen: torch.Generator, radii: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K, 2) centres (x, y): each object inside the image, bounding circles apart by at least `_GAP`.

    Whole layouts are drawn `_PLACEMENT_TRIES` at a time and each scene takes its first valid one;
    scenes without one draw again (bounded: an error if that ever ran out, never an overlap).
    """
    b, k = radii.shape
    reach = _REACH * radii  # (B, K)
    needed = reach[:, :, None] + reach[:, None, :] + _GAP  # (B, K, K) centre distance each pair needs
    pairs = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    centres = torch.zeros(b, k, 2)
    pending = torch.ones(b, dtype=torch.bool)
    for _ in range(200):
        low = reach[:, None, :, None]
        candidates = low + (size - 2 * low) * torch.rand((b, _PLACEMENT_TRIES, k, 2), generator=gen)
        distance = (candidates[:, :, :, None] - candidates[:, :, None, :]).norm(dim=-1)  # (B, T, K, K)
        ok = ((distance >= needed[:, None]) | ~pairs).flatten(2).all(dim=-1)  # (B, T)
        found = ok.any(dim=1)
        chosen = candidates[torch.arange(b), ok.float().argmax(dim=1)]
        take = pending & found
        centres[take] = chosen[take]
        pending &= ~found
        if not pending.any():
            return centres
    raise RuntimeError("could not place the objects of a scene without overlap; this is a bug in the scene generator")


def _class_colours(gen: torch.Generator, labels: torch.Tensor) -> torch.Tensor:
    """(B, K, 3): the hue of each class's family (60 degrees apart) +- 18 degrees, saturation and value in
    [0.8, 1]: every object colour has a channel spread >= 0.64, every background pixel <= 0.1."""
    shape = tuple(labels.shape)
    hue = (labels.float() / len(CLASS_NAMES) + _uniform(gen, shape, -_HUE_JITTER, _HUE_JITTER)) % 1.0
    saturation = _uniform(gen, shape, 0.8, 1.0)
    value = _uniform(gen, shape, 0.8, 1.0)
    return _hsv_to_rgb(hue, saturation, value)


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """(...,) HSV in [0, 1] -> (..., 3) RGB."""
    sector = (hue[..., None] * 6.0 + torch.tensor([5.0, 3.0, 1.0])) % 6.0  # the standard k-offsets for R, G, B
    ramp = torch.clamp(torch.minimum(sector, 4.0 - sector), 0.0, 1.0)
    return value[..., None] - value[..., None] * saturation[..., None] * ramp


def _background(gen: torch.Generator, b: int, size: int) -> torch.Tensor:
    """(B, 3, S, S) textures: a low-saturation base colour plus a grey pattern (stripes, checks or blotches)."""
    base = _uniform(gen, (b, 1, 1, 1), 0.35, 0.65) + _uniform(gen, (b, 3, 1, 1), -0.05, 0.05)
    amplitude = _uniform(gen, (b, 1, 1, 1), 0.05, 0.15)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = coords[:, None], coords[None, :]
    angle = _uniform(gen, (b, 1, 1), 0.0, math.pi)
    period = _uniform(gen, (b, 1, 1), 6.0, 16.0)
    phase = _uniform(gen, (b, 1, 1), 0.0, 2 * math.pi)
    stripes = torch.sin(2 * math.pi * (x * torch.cos(angle) + y * torch.sin(angle)) / period + phase)
    cell = torch.randint(4, 13, (b, 1, 1), generator=gen).float()
    checks = (((x // cell) + (y // cell)) % 2) * 2.0 - 1.0
    coarse = torch.rand((b, 1, 8, 8), generator=gen) * 2.0 - 1.0
    blotches = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    kind = torch.randint(0, 3, (b, 1, 1), generator=gen)
    pattern = torch.where(kind == 0, stripes, torch.where(kind == 1, checks, blotches.clamp(-1.0, 1.0)))
    return (base + amplitude * pattern[:, None]).clamp(0.0, 1.0)


def _shape_masks(labels: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K, S, S) bool: pixel centres inside each object's shape (its class's shape).

    Batched per class: each shape's test runs once on all the objects of that class.
    """
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    masks = torch.zeros(*labels.shape, size, size, dtype=torch.bool)
    for label, inside in enumerate(_SHAPES):
        chosen = labels == label
        if chosen.any():
            dx = coords[None, None, :] - centres[chosen][:, 0, None, None]
            dy = coords[None, :, None] - centres[chosen][:, 1, None, None]
            masks[chosen] = inside(dx, dy, radii[chosen][:, None, None])
    return masks


def _disk(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return dx * dx + dy * dy <= r * r


def _ring(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    square_distance = dx * dx + dy * dy
    return (square_distance <= r * r) & (square_distance >= (0.55 * r) ** 2)


def _square(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.maximum(dx.abs(), dy.abs()) <= 0.8 * r


def _diamond(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return dx.abs() + dy.abs() <= r


def _triangle(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Apex up at -r, base at +0.7r, half as wide as tall at every height: fits within 1.25 r."""
    return (dy >= -r) & (dy <= 0.7 * r) & (dx.abs() <= (dy + r) / 1.7)


def _cross(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    ax, ay = dx.abs(), dy.abs()
    return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))


_SHAPES = (_disk, _ring, _square, _diamond, _triangle, _cross)  # in CLASS_NAMES order


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    return torch.round(images.detach().cpu().clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy()
