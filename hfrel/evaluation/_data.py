"""Datasets of images with object masks: a plain folder, and the ImageNet-segmentation file the paper used.

Both are read item by item: a broken item (missing mask, unreadable image, size mismatch, ...) raises
InputError from `load(i)`, and the runner records it as skipped and goes on. Problems found while
indexing (a row without an image, a duplicate name, an image no row lists) are in `skipped` up front.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from hfrel._errors import InputError
from hfrel._images import IMAGE_SUFFIXES, load_image, open_upright

LAYOUT = "a folder with images/<name>.png|jpg, masks/<name>.png (non-zero = object) and labels.csv (header image,label)"


@dataclass(frozen=True)
class Sample:
    """One evaluation item: an RGB image, its object mask, and the class the mask shows."""

    name: str
    image: Image.Image
    mask: np.ndarray
    """(H, W) booleans, True on the object; the image's size."""
    label: int | str | None
    """A class index or name (resolved against the model's classes), or None for unlabelled data."""


@dataclass(frozen=True)
class Skipped:
    """An item left out of an evaluation, and why."""

    item: str
    reason: str


@runtime_checkable
class EvaluationData(Protocol):
    """What `evaluate` reads: indexed items that load one at a time (or raise InputError)."""

    skipped: list[Skipped]
    labelled: bool
    """Whether items carry the class their mask shows (needed for the perturbation test and label="dataset")."""
    source: str

    def __len__(self) -> int: ...

    def name(self, index: int) -> str: ...

    def load(self, index: int) -> Sample: ...


def check_sample(name: str, image: Image.Image, mask: np.ndarray) -> None:
    """A mask must match its image in size and show at least one object pixel."""
    if mask.shape != (image.height, image.width):
        raise InputError(
            f"{name}: the mask is {mask.shape[1]}x{mask.shape[0]} pixels but the image is "
            f"{image.width}x{image.height}; masks must have their image's size."
        )
    if not mask.any():
        raise InputError(f"{name}: the mask has no object pixel (all zero); it cannot score a map.")


def read_mask(path: Path) -> np.ndarray:
    """An object mask from an image file: (H, W) booleans, True where any colour channel (or, for palette
    images, the palette index) is non-zero; alpha is ignored. EXIF orientation is applied, as for images."""
    picture = open_upright(path, "mask file")
    array = np.asarray(picture)
    if picture.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        array = array[..., :-1]
    return array.any(axis=-1) if array.ndim == 3 else array != 0


@dataclass(frozen=True)
class _Entry:
    name: str
    image: Path
    mask: Path
    label: str


class FolderDataset:
    """`root/images/<name>.png|jpg`, `root/masks/<name>.png` and `root/labels.csv` (header `image,label`,
    one row per name; the label is a class index or name). The same picture may appear under several
    names, each with its own mask and label (one object of a multi-object scene per name)."""

    labelled = True

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.skipped: list[Skipped] = []
        self._entries: list[_Entry] = []
        images_dir, masks_dir, table = self.root / "images", self.root / "masks", self.root / "labels.csv"
        if not self.root.is_dir():
            raise InputError(f"no dataset folder at {self.root}; expected {LAYOUT}.")
        if not table.is_file():
            raise InputError(f"no labels.csv in {self.root}; expected {LAYOUT}.")
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise InputError(f"no {folder.name}/ folder in {self.root}; expected {LAYOUT}.")
        files = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{images_dir} holds no image file; expected {LAYOUT}.")
        rows = _read_table(table)
        if not rows:
            raise InputError(f"{table} lists no image; add one row `name,label` per image under its header.")
        by_stem: dict[str, list[Path]] = {}
        for path in files:
            by_stem.setdefault(path.stem, []).append(path)
        listed: dict[str, int] = {}
        for line, cells in rows:
            where = f"labels.csv line {line}"
            if len(cells) != 2 or not cells[0] or not cells[1]:
                self.skipped.append(Skipped(where, f"expected two fields `image,label`, got {','.join(cells)!r}"))
                continue
            text, label = cells
            image = self._find_image(text, by_stem)
            if isinstance(image, str):
                self.skipped.append(Skipped(text, image))
                continue
            name = image.stem
            if name in listed:
                self.skipped.append(Skipped(name, f"listed twice in labels.csv (lines {listed[name]} and {line})"))
                continue
            listed[name] = line
            mask = masks_dir / f"{name}.png"
            if not mask.is_file():
                self.skipped.append(Skipped(name, f"missing mask: no file masks/{name}.png"))
                continue
            self._entries.append(_Entry(name, image, mask, label))
        for path in files:
            if path.stem not in listed:
                self.skipped.append(Skipped(path.stem, f"images/{path.name} is not listed in labels.csv"))

    @staticmethod
    def _find_image(text: str, by_stem: dict[str, list[Path]]) -> Path | str:
        """The image a labels.csv row names (with or without its suffix), or why there is none."""
        named = Path(text)
        if named.name != text:
            return f"the image column must hold a file name in images/, not a path: {text!r}"
        if named.suffix.lower() in IMAGE_SUFFIXES:
            matches = [p for p in by_stem.get(named.stem, []) if p.name == text]
        else:
            matches = by_stem.get(text, [])
        if not matches:
            return f"missing image: no file images/{text}" + ("" if named.suffix else ".png or .jpg")
        if len(matches) > 1:
            return f"ambiguous image: {' and '.join('images/' + p.name for p in matches)}; name it with its suffix"
        return matches[0]

    @property
    def source(self) -> str:
        return str(self.root)

    def __len__(self) -> int:
        return len(self._entries)

    def name(self, index: int) -> str:
        return self._entries[index].name

    def load(self, index: int) -> Sample:
        entry = self._entries[index]
        image = load_image(entry.image)
        mask = read_mask(entry.mask)
        check_sample(entry.name, image, mask)
        return Sample(entry.name, image, mask, entry.label)


def _read_table(path: Path) -> list[tuple[int, list[str]]]:
    """The rows of labels.csv after its `image,label` header, with their line numbers; blank rows dropped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} is not a readable UTF-8 CSV file ({error})") from error
    rows = [(line, cells) for line, cells in rows if any(cells)]
    if not rows or [cell.lower() for cell in rows[0][1]] != ["image", "label"]:
        found = ",".join(rows[0][1]) if rows else "nothing"
        raise InputError(f"{path} must start with the header `image,label`; found {found!r}.")
    return rows[1:]


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as error:
        raise InputError(
            "reading gtsegs_ijcv.mat needs h5py, which hfrel does not install by default: "
            "pip install 'hfrel[imagenet-seg]' (or pip install h5py)."
        ) from error
    return h5py


class ImagenetSegmentation:
    """The ImageNet-segmentation set (Guillaumin et al., IJCV 2014) as the paper read it: `gtsegs_ijcv.mat`,
    a MATLAB v7.3 (HDF5) file of 4,276 images and object masks, without class labels.

    `value/img` and `value/gt` hold one object reference per item (shape (N, 1)). An image reference leads
    to a uint8 array stored transposed, (3, W, H); a mask reference leads to a 1 x 1 array of references
    (a cell) whose single entry leads to the mask, stored transposed, (W, H). Needs h5py. Use as a context
    manager, or call `close()`, to release the file.
    """

    labelled = False

    def __init__(self, path: str | Path) -> None:
        h5py = _h5py()
        self.path = Path(path)
        self.skipped: list[Skipped] = []
        if not self.path.is_file():
            raise InputError(f"no file at {self.path}; expected the ImageNet-segmentation file gtsegs_ijcv.mat.")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise InputError(
                f"{self.path} is not an HDF5 file (a MATLAB v7.3 .mat, as gtsegs_ijcv.mat is): {error}"
            ) from error
        try:
            images, masks = self._file["value/img"], self._file["value/gt"]
            self._images = np.asarray(images).reshape(-1)
            self._masks = np.asarray(masks).reshape(-1)
        except (KeyError, TypeError, ValueError) as error:
            self._file.close()
            raise InputError(
                f"{self.path} does not have the layout of gtsegs_ijcv.mat (reference arrays value/img and "
                f"value/gt): {error}"
            ) from error
        if len(self._images) != len(self._masks) or not len(self._images):
            self._file.close()
            raise InputError(
                f"{self.path}: value/img holds {len(self._images)} references and value/gt {len(self._masks)}; "
                f"expected the same, non-zero number."
            )

    @property
    def source(self) -> str:
        return str(self.path)

    def __len__(self) -> int:
        return len(self._images)

    def name(self, index: int) -> str:
        return f"{index:04d}"

    def load(self, index: int) -> Sample:
        name = self.name(index)
        try:
            pixels = np.asarray(self._file[self._images[index]])
            cell = self._file[self._masks[index]]
            mask = np.asarray(self._file[np.asarray(cell).reshape(-1)[0]])
        except (KeyError, TypeError, ValueError, OSError, IndexError) as error:
            raise InputError(f"{name}: cannot read its image or mask from {self.path} ({error})") from error
        if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or pixels.dtype != np.uint8:
            raise InputError(
                f"{name}: expected a uint8 image stored as (3, W, H); found {pixels.dtype} {pixels.shape}."
            )
        if mask.ndim != 2:
            raise InputError(f"{name}: expected a mask stored as (W, H); found shape {mask.shape}.")
        array = np.ascontiguousarray(pixels.transpose(2, 1, 0))  # MATLAB's column-major (3, W, H) -> (H, W, 3)
        image = Image.fromarray(np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array)
        truth = np.ascontiguousarray(mask.T) != 0
        check_sample(name, image, truth)
        return Sample(name, image, truth, None)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ImagenetSegmentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SceneData:
    """hfrel's synthetic scenes (`hfrel.datasets`) as evaluation items, generated, never read from disk.

    Each object of each scene is one item: the scene, that object's exact mask and its class name.
    Held-out scenes (`PROTOCOL_SEED`), never seen by the demo model in training.
    """

    labelled = True

    def __init__(self, scenes: int = 200, objects: int = 1) -> None:
        from hfrel.datasets import CLASS_NAMES, make_scenes
        from hfrel.datasets._demo_model import PROTOCOL_SEED

        self._scenes = make_scenes(scenes, objects=objects, seed=PROTOCOL_SEED)
        self._names = CLASS_NAMES
        self.skipped: list[Skipped] = []
        kind = "one object" if objects == 1 else f"{objects} objects, one item per object"
        self.source = f"shapes: {scenes} synthetic scenes (seed {PROTOCOL_SEED}, {kind})"

    def __len__(self) -> int:
        return len(self._scenes) * self._scenes.objects

    def name(self, index: int) -> str:
        scene, which = divmod(index, self._scenes.objects)
        return f"scene_{scene:04d}_{'abc'[which]}"

    def load(self, index: int) -> Sample:
        scene, which = divmod(index, self._scenes.objects)
        pixels = (self._scenes.images[scene].permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
        return Sample(
            name=self.name(index),
            image=Image.fromarray(pixels, mode="RGB"),
            mask=self._scenes.masks[scene, which].numpy(),
            label=self._names[int(self._scenes.labels[scene, which])],
        )


BUILT_IN = {"shapes": 1, "shapes-pairs": 2}
"""Names `--data` accepts for the built-in scenes -> objects per scene."""


def open_dataset(path: str | Path, *, count: int | None = None) -> FolderDataset | ImagenetSegmentation | SceneData:
    """A dataset folder (images/, masks/, labels.csv), an ImageNet-segmentation .mat file, or a built-in
    name: "shapes" (single-object synthetic scenes) or "shapes-pairs" (two-object scenes, one item per
    object); `count` items of those (default 200)."""
    if str(path) in BUILT_IN and not Path(path).exists():
        objects = BUILT_IN[str(path)]
        items = 200 if count is None else count
        return SceneData(scenes=max(1, -(-items // objects)), objects=objects)
    location = Path(path)
    if location.is_file() and location.suffix.lower() in (".mat", ".h5", ".hdf5"):
        return ImagenetSegmentation(location)
    if location.is_file():
        raise InputError(f"{location} is a file; --data takes {LAYOUT}, or gtsegs_ijcv.mat.")
    return FolderDataset(location)
