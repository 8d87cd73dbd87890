"""Loading a classifier and its image processor from a hub id or a local folder, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hfrel._errors import InputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """ "auto" -> the first CUDA device if there is one, else the CPU; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but this torch build or machine has no CUDA device")
    return resolved


def _looks_like_path(name: str) -> bool:
    """A name a hub id cannot be ("org/name" or "name"): absolute, relative-dotted, home, or deeper paths."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def load_classifier(
    name_or_path: str | Path, *, device: str | torch.device | None = "auto", dtype: torch.dtype | None = None
) -> tuple[torch.nn.Module, object]:
    """(model, image processor) from a hub id or a folder saved with `save_pretrained`, in eval mode.

    Raises InputError when the folder does not exist or lacks a model or processor, and when a hub
    id cannot be fetched (no network, no such repository).
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"--model must be a folder or a hub id; {name} is a file")
    if _looks_like_path(name) and not path.exists():
        raise InputError(f"no model folder at {name}")
    target = str(path) if path.exists() else name
    where = f"the folder {name}" if path.exists() else f"the hub id {name!r}"
    try:
        model = AutoModelForImageClassification.from_pretrained(target, dtype=dtype)
    except OSError as error:
        if path.exists():
            raise InputError(f"no image-classification model in {where} ({_first_line(error)})") from error
        raise InputError(
            f"could not load {where}: it is not a local folder, and fetching it from the Hugging Face hub "
            f"failed (no network, or no such repository). {_first_line(error)}"
        ) from error
    except ValueError as error:
        raise InputError(f"{where} holds no image-classification model: {_first_line(error)}") from error
    try:
        processor = AutoImageProcessor.from_pretrained(target)
    except (OSError, ValueError) as error:
        raise InputError(
            f"no image processor for {where}: save one next to the model with processor.save_pretrained(...). "
            f"{_first_line(error)}"
        ) from error
    model.to(resolve_device(device)).eval()
    return model, processor


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
