"""The demo models shipped inside the package, trained on the synthetic scenes.

A small ViT classifier (`examples/train_demo_model.py` reproduces it) and a tiny CLIP-style zero-shot
model with its own word-level tokenizer (`examples/train_zero_shot_model.py`). Scenes of
`TRAINING_SEED` are the only ones they saw; every other seed is held out.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hfrel.datasets._scenes import CLASS_NAMES

TRAINING_SEED = 0
"""The seed of the single-object scenes the demo model was trained on."""

EVALUATION_SEED = 1
"""Held-out single-object scenes its accuracy is measured on (training script and tests)."""

DEMO_SEED = 2
"""Held-out multi-object scenes `hfrel demo` shows."""

MEASUREMENT_SEED = 3
"""Held-out two-object scenes of the class-specificity measurement (docs/results.md)."""

PROTOCOL_SEED = 4
"""Held-out scenes of `hfrel evaluate --data shapes` (the paper's protocols on the demo model)."""

ZERO_SHOT_TEMPLATE = "a photo of a {}"
"""The zero-shot model's prompt for a class: `ZERO_SHOT_TEMPLATE.format("disk")`; the class name is its noun."""

ZERO_SHOT_PROMPTS: tuple[str, ...] = tuple(ZERO_SHOT_TEMPLATE.format(name) for name in CLASS_NAMES)
"""The six prompts, in class-index order."""


def demo_model_path() -> Path:
    """The folder of the bundled model: `config.json`, `model.safetensors`, `preprocessor_config.json`.

    Load it with `from_pretrained(demo_model_path())` like any saved checkpoint.
    """
    return Path(__file__).resolve().parent / "demo_model"


def load_demo_model(device: str | torch.device | None = "cpu") -> tuple[torch.nn.Module, object]:
    """(ViTForImageClassification in eval mode, its ViTImageProcessor), from the package; no network.

    `device`: "cpu" (default), "auto" (CUDA if available) or any torch device.
    """
    from hfrel._loading import load_classifier

    return load_classifier(demo_model_path(), device=device)


def zero_shot_model_path() -> Path:
    """The folder of the bundled zero-shot model: a `CLIPModel` and its `CLIPProcessor` (tokenizer included).

    Load it like any saved CLIP checkpoint: `CLIPModel.from_pretrained(...)`, `AutoProcessor.from_pretrained(...)`.
    """
    return Path(__file__).resolve().parent / "zero_shot_model"


def load_zero_shot_model(device: str | torch.device | None = "cpu") -> tuple[torch.nn.Module, object]:
    """(CLIPModel in eval mode, its CLIPProcessor), from the package; no network.

    Prompts such as `ZERO_SHOT_PROMPTS` ("a photo of a disk", ...) go through the processor's tokenizer:
    `processor(text=ZERO_SHOT_PROMPTS, images=images, return_tensors="pt", padding=True)`.
    `device`: "cpu" (default), "auto" (CUDA if available) or any torch device.
    """
    from transformers import AutoProcessor, CLIPModel

    from hfrel._loading import resolve_device

    path = zero_shot_model_path()
    model = CLIPModel.from_pretrained(path).to(resolve_device(device)).eval()
    return model, AutoProcessor.from_pretrained(path)
