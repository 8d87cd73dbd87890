"""Target classes: from what users pass (None, an index, a name, one per image, K per image) to a (B, K) tensor."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Mapping, Sequence

import torch

from hfrel._errors import LabelError


def class_names(id2label: Mapping | None, num_labels: int) -> dict[int, str]:
    """Index -> class name, filling gaps with the index itself."""
    names = {int(k): str(v) for k, v in (id2label or {}).items()}
    return {i: names.get(i, str(i)) for i in range(num_labels)}


def label_from_name(name: str, id2label: Mapping | None, num_labels: int) -> int:
    """A class index from a class name (case-insensitive) or a number (always read as an index).

    Unknown names raise LabelError listing the closest class names; ambiguous ones (two classes
    whose names differ only in case) list the classes they could mean.
    """
    text = str(name).strip()
    if text.lstrip("-").isdigit():
        return check_index(int(text), num_labels)
    names = class_names(id2label, num_labels)
    folded: dict[str, list[int]] = {}
    for index, label in names.items():
        folded.setdefault(label.casefold(), []).append(index)
    key = text.casefold()
    hits = folded.get(key, [])
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        listed = ", ".join(f"{names[i]!r} ({i})" for i in hits)
        raise LabelError(f"class name {name!r} is ambiguous: it names {listed}. Pass the class index instead.")
    close = difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)
    partial = [k for k in folded if key and key in k]
    suggestions = list(dict.fromkeys(close + partial))[:5]
    hint = ""
    if suggestions:
        hint = " Close matches: " + ", ".join(f"{names[folded[s][0]]!r} ({folded[s][0]})" for s in suggestions) + "."
    raise LabelError(
        f"unknown class name {name!r}: the model has {num_labels} classes (config.id2label).{hint} "
        f"Pass a class index in [0, {num_labels - 1}] or one of the model's class names."
    )


def check_index(index: int, num_labels: int) -> int:
    """`index` itself, if it names one of the model's classes."""
    if not 0 <= index < num_labels:
        raise LabelError(
            f"label {index} is out of range: the model has {num_labels} classes, so labels must be in "
            f"[0, {num_labels - 1}]."
        )
    return index


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def resolve_labels(label: object, logits: torch.Tensor, id2label: Mapping | None) -> tuple[torch.Tensor, bool]:
    """The (B, K) class indices to explain, and whether the caller asked for K per image (2-D labels).

    None -> each image's arg-max; an int or a name -> that class for every image; B values -> one each;
    a (B, K) tensor or nested sequence -> K classes per image.
    """
    batch, num_labels = logits.shape
    device = logits.device
    if label is None:
        return logits.argmax(dim=-1, keepdim=True), False
    if isinstance(label, str):
        return torch.full((batch, 1), label_from_name(label, id2label, num_labels), device=device), False
    if _is_integer(label):
        return torch.full((batch, 1), check_index(int(label), num_labels), device=device), False
    if isinstance(label, torch.Tensor):
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise LabelError(f"labels must be integer class indices, got a tensor of dtype {label.dtype}.")
        values = label.detach().to("cpu", torch.long)
    elif isinstance(label, Sequence) or hasattr(label, "__array__"):
        items = list(label) if isinstance(label, Sequence) else label.tolist()  # type: ignore[union-attr]
        values = _from_sequence(items, id2label, num_labels)
    else:
        raise LabelError(
            f"label must be None, an int, a class name, or B of them (a list or tensor); got {type(label).__name__}."
        )
    if values.dim() == 0:
        return torch.full((batch, 1), check_index(int(values), num_labels), device=device), False
    if values.dim() > 2:
        raise LabelError(f"labels must have shape (B,) or (B, K); got shape {tuple(values.shape)}.")
    if values.shape[0] != batch:
        raise LabelError(
            f"got {values.shape[0]} labels for a batch of {batch} images: pass one label per image "
            f"(or a (B, K) tensor for K classes per image), a single int for all, or None for the predicted class."
        )
    if values.dim() == 2 and values.shape[1] == 0:
        raise LabelError("labels of shape (B, 0) ask for no class at all; pass at least one class per image.")
    bad = values[(values < 0) | (values >= num_labels)]
    if bad.numel():
        check_index(int(bad.flatten()[0]), num_labels)
    many = values.dim() == 2
    return values.reshape(batch, -1).to(device), many


def _from_sequence(items: list, id2label: Mapping | None, num_labels: int) -> torch.Tensor:
    def one(item: object) -> int:
        if isinstance(item, str):
            return label_from_name(item, id2label, num_labels)
        if isinstance(item, torch.Tensor) and item.dim() == 0 and not item.is_floating_point():
            return int(item)
        if _is_integer(item):
            return int(item)  # type: ignore[arg-type]
        raise LabelError(f"labels must be integer class indices or class names; got {item!r}.")

    if items and all(isinstance(i, (Sequence, torch.Tensor)) and not isinstance(i, str) for i in items):
        rows = [[one(v) for v in row] for row in items]
        if len({len(r) for r in rows}) != 1:
            raise LabelError("nested labels must all have the same length K (a (B, K) table).")
        return torch.tensor(rows, dtype=torch.long)
    return torch.tensor([one(i) for i in items], dtype=torch.long)


def fixed_labels(label: object, id2label: Mapping | None, num_labels: int, *, option: str = "label") -> tuple[int, ...]:
    """The classes to explain for every image, from one or many indices or class names (no duplicates)."""
    values = [label] if isinstance(label, (str, numbers.Integral)) else label
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise LabelError(f"{option} must be a class index, a class name, or a list of them; got {label!r}.")
    if not values:
        raise LabelError(f"{option} is empty: pass at least one class, or None for each image's predicted class.")
    resolved = []
    for value in values:
        if isinstance(value, str):
            resolved.append(label_from_name(value, id2label, num_labels))
        elif _is_integer(value):
            resolved.append(check_index(int(value), num_labels))  # type: ignore[arg-type]
        else:
            raise LabelError(f"{option} must be class indices or class names; got {value!r}.")
    return tuple(dict.fromkeys(resolved))
