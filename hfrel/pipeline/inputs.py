"""Inputs of a run: files, folders and dataset rows -> items, each read into an upright RGB image.

Per-item failures (a file Pillow cannot decode, a row without its column) are `InputError`s that fail
that item only; the run goes on with the others.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from hfrel._errors import InputError, LabelError
from hfrel._html import INDEX_PAGE
from hfrel._images import DECODE_ERRORS, Problem, find_images, load_image, output_names, to_rgb
from hfrel._labels import label_from_name
from hfrel.pipeline.fingerprint import digest
from hfrel.pipeline.records import INDEX, SUMMARY


@dataclass(frozen=True)
class Photo:
    """An input as read: the upright RGB image and, from a label column, the class to explain."""

    image: Image.Image
    label: int | None = None


class FileSource:
    """An image file. Its identity for reruns is its resolved path, size and modification time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = str(path)  # how records and messages name it
        self.title = path.name  # the panel's input title

    def identity(self) -> dict[str, Any]:
        """What makes this input the same one next time, read without decoding the image."""
        try:
            stat = self.path.stat()
        except OSError:
            return {"file": str(self.path.resolve()), "missing": True}
        return {"file": str(self.path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def read(self, num_labels: int, names: Mapping[int, str]) -> Photo:
        return Photo(load_image(self.path))


class ExampleSource:
    """Example `index` of a dataset split (anything indexable whose items are dicts of columns)."""

    def __init__(self, examples: Any, index: int, image_column: str, label_column: str | None) -> None:
        self.examples = examples
        self.index = index
        self.image_column = image_column
        self.label_column = label_column
        self.text = f"example {index}"
        self.title = self.text

    def read(self, num_labels: int, names: Mapping[int, str]) -> Photo:
        example = self.examples[self.index]
        if not isinstance(example, Mapping):
            raise InputError(f"{self.text} is a {type(example).__name__}, not a dict of columns")
        if self.image_column not in example:
            raise InputError(f"{self.text} has no column {self.image_column!r}; its columns are {_columns(example)}")
        image = _to_image(example[self.image_column], f"{self.text}'s {self.image_column!r}")
        label = None
        if self.label_column is not None:
            if self.label_column not in example:
                raise InputError(
                    f"{self.text} has no column {self.label_column!r}; its columns are {_columns(example)}"
                )
            label = _example_label(example[self.label_column], num_labels, names, self.text, self.label_column)
        return Photo(image, label)


@dataclass(frozen=True)
class Item:
    """One input to explain: its place in the run, its output folder's name, and where it comes from."""

    position: int
    name: str
    source: FileSource | ExampleSource = field(compare=False)


def _columns(example: Mapping) -> str:
    return ", ".join(repr(str(key)) for key in example) or "none"


def _to_image(value: Any, what: str) -> Image.Image:
    """A dataset's image cell -> upright RGB: a PIL image, a path, an array, or an undecoded
    `datasets` cell ({"bytes": ..., "path": ...})."""
    if isinstance(value, Image.Image):
        try:  # `datasets` decodes lazily: a broken file surfaces here, and only here
            value.load()
            upright = ImageOps.exif_transpose(value)
        except DECODE_ERRORS as error:
            raise InputError(f"{what} is an image Pillow cannot decode ({type(error).__name__}: {error})") from error
        return to_rgb(upright)
    if isinstance(value, (str, os.PathLike)):
        return load_image(value)
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            try:
                with Image.open(io.BytesIO(value["bytes"])) as opened:
                    opened.load()
                    upright = ImageOps.exif_transpose(opened)
            except DECODE_ERRORS as error:
                raise InputError(f"{what} holds bytes Pillow cannot read as an image ({error})") from error
            return to_rgb(upright)
        if value.get("path"):
            return load_image(value["path"])
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and (value.ndim == 2 or value.shape[-1] in (3, 4)):
        return to_rgb(Image.fromarray(value))
    raise InputError(
        f"{what} is a {type(value).__name__}; expected a PIL image, an image path, a uint8 (H, W[, 3|4]) array, "
        f"or a `datasets` image cell"
    )


def _example_label(value: Any, num_labels: int, names: Mapping[int, str], text: str, column: str) -> int:
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, str):
        return label_from_name(value, names, num_labels)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if not 0 <= int(value) < num_labels:
            raise LabelError(
                f"{text}'s {column!r} is {int(value)}, but the model has {num_labels} classes [0, {num_labels - 1}]: "
                f"the column must hold the model's class indices or class names"
            )
        return int(value)
    raise LabelError(f"{text}'s {column!r} is {value!r}; expected a class index or a class name")


def items_from(
    images: Any, image_column: str = "image", label_column: str | None = None
) -> tuple[list[Item], list[Problem]]:
    """What to explain, from file or folder paths, or from a dataset split of dict examples.

    Paths go through `find_images` (folders one level deep, sorted by name); examples keep their
    index as position and are named `example-<index>` (six digits at least).
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, Mapping):
        raise InputError(
            f"images is a mapping with keys {', '.join(map(repr, list(images)[:5]))}: pass one split of a "
            f"DatasetDict (e.g. dataset['validation']), or a list of image paths"
        )
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise InputError(
            f"images must be image paths, folders, or an indexable dataset split with a len() (got "
            f"{type(images).__name__}); a streaming dataset cannot be split among processes by index"
        )
    if len(images) == 0:
        raise InputError("no image to explain: images is empty")
    first = images[0]
    if isinstance(first, Mapping):
        for column in (image_column, label_column):
            if column is not None and column not in first:
                raise InputError(f"the examples have no column {column!r}; their columns are {_columns(first)}")
        items = [
            Item(i, f"example-{i:06d}", ExampleSource(images, i, image_column, label_column))
            for i in range(len(images))
        ]
        return items, []
    if label_column is not None:
        raise InputError("label_column applies to dataset examples, not to image files")
    paths = list(images)
    wrong = [p for p in paths if not isinstance(p, (str, os.PathLike))]
    if wrong:
        raise InputError(
            f"images must be all paths or all dict examples; got a {type(wrong[0]).__name__} among them "
            f"(to explain in-memory images, pass examples such as [{{'image': pil_image}}, ...])"
        )
    found, problems = find_images(paths)
    names = output_names(found, [SUMMARY, INDEX, INDEX_PAGE])
    return [Item(i, name, FileSource(path)) for i, (path, name) in enumerate(zip(found, names, strict=True))], problems


def example_identity(photo: Photo) -> dict[str, Any]:
    """What makes a dataset example the same one next time: its decoded pixels and its label."""
    image = photo.image
    pixels = digest(image.mode, str(image.size), image.tobytes())
    return {"pixels": pixels, "label": photo.label}
