"""The supported transformers range is stated once, in pyproject, and the installed release is inside it."""

from __future__ import annotations

import re
from pathlib import Path

import transformers

from hfrel._compat import SUPPORTED_TRANSFORMERS, transformers_supported

ROOT = Path(__file__).parents[1]


def test_pyproject_states_the_same_range():
    requirements = re.findall(r'"(transformers[^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert requirements == [f"transformers{SUPPORTED_TRANSFORMERS}"]
    assert f"`{SUPPORTED_TRANSFORMERS}`" in (ROOT / "README.md").read_text()


def test_installed_release_is_supported():
    assert transformers_supported(), transformers.__version__


def test_range_bounds():
    assert transformers_supported("5.18.0") and transformers_supported("5.99.1")
    assert not transformers_supported("5.17.0") and not transformers_supported("6.0.0")
    assert re.fullmatch(r">=\d+\.\d+,<\d+", SUPPORTED_TRANSFORMERS)
