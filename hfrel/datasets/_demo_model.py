"""The demo model shipped inside the package: a small ViT trained on the synthetic scenes.

`examples/train_demo_model.py` reproduces it. Scenes of `TRAINING_SEED` are the only ones it saw;
every other seed is held out.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
