"""hfrel: class-specific relevance maps for Hugging Face vision transformers.

    with hfrel.attach(model) as explainer:
        exp = explainer.explain(pixel_values, label)

Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization" (CVPR 2021), and the
baselines it compares with, on stock `transformers` models: hooks, no copied model code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hfrel import _compat  # noqa: F401  (warns on an unsupported transformers release)
from hfrel._errors import (
    AttachError,
    ContextError,
    FamilySpecError,
    HfrelError,
    InputError,
    LabelError,
    MethodError,
    ProcessFailedError,
    UnsupportedModelError,
)
from hfrel._explainer import Explainer, attach
from hfrel._explanation import Explanation
from hfrel._methods import describe_methods, methods
from hfrel.models import FamilySpec, register_family, supported_models

if TYPE_CHECKING:
    from hfrel import datasets, evaluation, integrations, pipeline, viz  # noqa: F401
    from hfrel.pipeline import explain_images

__version__ = "0.1.0"

# Imported on first use, so `import hfrel` stays light (no matplotlib, Pillow pipelines or Trainer):
# `hfrel.viz`, `hfrel.evaluation`, ... work right after `import hfrel`, as in the docs.
_SUBMODULES = ("datasets", "evaluation", "integrations", "pipeline", "viz")
_LAZY = {"explain_images": "hfrel.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"hfrel.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hfrel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES, *_LAZY})


__all__ = [
    "AttachError",
    "ContextError",
    "Explainer",
    "Explanation",
    "FamilySpec",
    "FamilySpecError",
    "HfrelError",
    "InputError",
    "LabelError",
    "MethodError",
    "ProcessFailedError",
    "UnsupportedModelError",
    "__version__",
    "attach",
    "describe_methods",
    "explain_images",
    "methods",
    "register_family",
    "supported_models",
]
