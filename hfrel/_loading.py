"""Loading a classifier and its image processor from a hub id or a local folder, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from hfrel._errors import InputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """ "auto" -> the first CUDA device if there is one, else the CPU; anything else as torch reads it,
    refused (InputError) when this machine does not have it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but this torch build or machine has no CUDA device")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise InputError(f"device {device!r} asked for, but this machine has {count} CUDA device(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but this torch build or machine has no MPS device")
    return resolved


def _looks_like_path(name: str) -> bool:
    """A name a hub id cannot be ("org/name" or "name"): absolute, relative-dotted, home, or deeper paths."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def load_classifier(
    name_or_path: str | Path, *, device: str | torch.device | None = "auto", dtype: torch.dtype | None = None
) -> tuple[torch.nn.Module, Any]:
    """(model, image processor) from a hub id or a folder saved with `save_pretrained`, in eval mode.

    The model is `AutoModelForImageClassification`'s, the processor `AutoImageProcessor`'s (the PIL
    backend when torchvision is missing); a checkpoint of an image–text model (CLIPModel, SiglipModel,
    MetaClip2Model) comes as `AutoModel`'s, with `AutoProcessor`'s tokenizer and image processor.
    Raises InputError when the folder does not exist or lacks a model or processor, when a hub id
    cannot be fetched (no network, no such repository), and for a device this machine does not have.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    target_device = resolve_device(device)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"--model must be a folder or a hub id; {name} is a file")
    if _looks_like_path(name) and not path.exists():
        raise InputError(f"no model folder at {name}")
    local = path.exists()
    if local and not (path / "config.json").is_file():
        raise InputError(
            f"no model in the folder {name}: it has no config.json; save a checkpoint there with "
            f"model.save_pretrained(...) and processor.save_pretrained(...)"
        )
    target = str(path) if local else name
    where = f"the folder {name}" if local else f"the hub id {name!r}"
    options = {} if dtype is None else {"dtype": dtype}
    if _image_text_checkpoint(target):
        return _load_image_text(target, where, options, target_device)
    try:
        model = AutoModelForImageClassification.from_pretrained(target, **options)
    except OSError as error:
        if local:
            raise InputError(f"no image-classification model in {where} ({_first_line(error)})") from error
        offline = " HF_HUB_OFFLINE is set, so hfrel may not download." if _offline() else ""
        raise InputError(
            f"could not load {where}: it is not a local folder, and fetching it from the Hugging Face hub "
            f"failed (no network, or no such repository).{offline} {_first_line(error)}"
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
    model.to(target_device).eval()
    return model, processor


def _image_text_checkpoint(target: str) -> bool:
    """Whether the checkpoint's config names an image–text model hfrel explains (CLIPModel, SiglipModel, ...).

    Read first, because AutoModelForImageClassification would load such a checkpoint as a classifier
    with a new, random head."""
    from transformers import AutoConfig

    from hfrel.models._image_text import image_text_specs

    try:
        architectures = AutoConfig.from_pretrained(target).architectures or []
    except (OSError, ValueError):
        return False  # the classifier path below reports what is wrong
    known = {name for spec in image_text_specs() for name in spec.classes}
    return bool(known.intersection(architectures))


def _load_image_text(target: str, where: str, options: dict, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """An image–text model with `AutoModel` and its processor (tokenizer + image processor) with `AutoProcessor`."""
    from transformers import AutoModel, AutoProcessor

    try:
        model = AutoModel.from_pretrained(target, **options)
        processor = AutoProcessor.from_pretrained(target)
    except (OSError, ValueError) as error:
        raise InputError(
            f"could not load the image–text model or its processor (tokenizer and image processor) from {where}: "
            f"{_first_line(error)}"
        ) from error
    model.to(device).eval()
    return model, processor


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
