"""Which transformers releases hfrel supports: the module layouts its family specs describe."""

from __future__ import annotations

import warnings

import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

SUPPORTED_TRANSFORMERS = ">=5.18,<6"


def transformers_supported(version: str = transformers.__version__) -> bool:
    return Version(version) in SpecifierSet(SUPPORTED_TRANSFORMERS)


if not transformers_supported():
    warnings.warn(
        f"hfrel supports transformers{SUPPORTED_TRANSFORMERS}, found {transformers.__version__}; "
        f"models whose module layout differs will be refused with UnsupportedModelError.",
        stacklevel=2,
    )
