"""hfrel: class-specific relevance maps for Hugging Face vision transformers.

    with hfrel.attach(model) as explainer:
        exp = explainer.explain(pixel_values, label)

Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization" (CVPR 2021), and the
baselines it compares with, on stock `transformers` models: hooks, no copied model code.
"""

from hfrel import _compat  # noqa: F401  (warns on an unsupported transformers release)
from hfrel._batch import explain_images
from hfrel._errors import (
    AttachError,
    HfrelError,
    InputError,
    LabelError,
    MethodError,
    UnsupportedModelError,
)
from hfrel._explainer import Explainer, attach
from hfrel._explanation import Explanation
from hfrel._methods import describe_methods, methods
from hfrel.models import FamilySpec, register_family, supported_models

__version__ = "0.1.0"

__all__ = [
    "AttachError",
    "Explainer",
    "Explanation",
    "FamilySpec",
    "HfrelError",
    "InputError",
    "LabelError",
    "MethodError",
    "UnsupportedModelError",
    "__version__",
    "attach",
    "describe_methods",
    "explain_images",
    "methods",
    "register_family",
    "supported_models",
]
