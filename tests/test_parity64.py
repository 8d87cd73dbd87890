"""Parity in float64: every method matches the reference code's own float64 run (expected64.npz) to 1e-6.

In float32 some maps of the parity case are ill-conditioned (the reference's own float32 `lrp` is
2.7e-4 from its float64 run), so a float32 match partly tests rounding order; in float64 the
comparison tests the arithmetic itself. As tests/data/parity/README.md says: the model is cast with
`.double()`, the pixels are float64, and the attention softmax is kept in float64 (transformers'
eager attention, and hfrel's capturing function, ask for float32 even for a float64 model).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import hfrel
from tests.conftest import PARITY
from tests.test_parity import CASES, reference_key, relative_error

TOLERANCE = 1e-6
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def case64() -> dict[str, np.ndarray]:
    with np.load(PARITY / "expected64.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture
def model64():
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(PARITY).double().eval()


def _inputs(case64: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(case64["pixel_values"]).double(), torch.from_numpy(case64["labels"])


@pytest.mark.parametrize(("method", "start_layer", "key"), CASES)
def test_method_matches_the_float64_reference(model64, case64, softmax_in_float64, method, start_layer, key):
    pixels, labels = _inputs(case64)
    with hfrel.attach(model64) as explainer:
        exp = explainer.explain(pixels, labels, method=method, start_layer=start_layer)
    assert exp.relevance.dtype == torch.float64
    np.testing.assert_allclose(exp.logits.numpy(), case64["logits"], rtol=1e-10, atol=1e-10)
    expected = case64[key]
    error = relative_error(exp.relevance.reshape(expected.shape).numpy(), expected)
    print(f"float64 parity {key}: relative error {error:.1e}")
    assert error < TOLERANCE


@pytest.mark.parametrize("start_layer", [0, 1])
def test_all_methods_in_one_float64_call(model64, case64, softmax_in_float64, start_layer):
    pixels, labels = _inputs(case64)
    with hfrel.attach(model64) as explainer:
        results = explainer.explain(pixels, labels, method=hfrel.methods(), start_layer=start_layer)
    for method, exp in results.items():
        key = reference_key(method, start_layer)
        if key is not None:
            expected = case64[key]
            assert relative_error(exp.relevance.reshape(expected.shape).numpy(), expected) < TOLERANCE, method


def test_the_float64_case_is_the_float32_case_computed_in_float64(case64, parity_case):
    """Same inputs and labels; the float32 reference is within float32 rounding of it, except where
    the README says the float32 maps are ill-conditioned (lrp)."""
    assert np.array_equal(case64["pixel_values"], parity_case["pixel_values"])
    assert np.array_equal(case64["labels"], parity_case["labels"])
    assert case64["lrp"].dtype == np.float64
    assert relative_error(parity_case["lrp"], case64["lrp"]) > 1e-4  # the README's 2.7e-4


def _ceil2(value: float) -> str:
    """`value` rounded up to two significant digits, as the docs table writes it."""
    exponent = int(np.floor(np.log10(value))) - 1
    return f"{np.ceil(value / 10.0**exponent) * 10.0**exponent:.1e}"


def _measured(model: torch.nn.Module, case: dict[str, np.ndarray], dtype: torch.dtype) -> dict[str, float]:
    pixels, labels = torch.from_numpy(case["pixel_values"]).to(dtype), torch.from_numpy(case["labels"])
    errors = {}
    with hfrel.attach(model) as explainer:
        for method, start_layer, key in CASES:
            exp = explainer.explain(pixels, labels, method=method, start_layer=start_layer)
            errors[key] = relative_error(exp.relevance.reshape(case[key].shape).numpy(), case[key])
    return errors


def test_docs_state_the_measured_parity_errors(parity_model, parity_case, model64, case64, softmax_in_float64):
    """docs/methods.md's parity table holds this test's measurements (rounded up); on a change, paste
    the table this test prints."""
    float32 = _measured(parity_model, parity_case, torch.float32)
    float64 = _measured(model64, case64, torch.float64)
    table = ["| map | float32 | float64 |", "| --- | --- | --- |"]
    table += [f"| `{key}` | {_ceil2(float32[key])} | {_ceil2(float64[key])} |" for _, _, key in CASES]
    print("\n".join(table))
    row = re.compile(r"^\| `(\w+)` \| ([0-9.e+-]+) \| ([0-9.e+-]+) \|$", re.M)
    text = (ROOT / "docs" / "methods.md").read_text()
    stated = {key: (float(a), float(b)) for key, a, b in row.findall(text) if key in float32}
    assert set(stated) == set(float32), "docs/methods.md lacks rows of the parity table"
    for key, (bound32, bound64) in stated.items():
        assert float32[key] <= bound32 and float64[key] <= bound64, f"{key}: the docs' figures are stale"


def test_the_reference_files_are_kept_as_received():
    """tests/data/parity holds the reference code's output unedited: each file's sha256 is the README's."""
    listed = re.findall(r"^\| `([\w.]+)` \| `([0-9a-f]{64})` \|$", (PARITY / "README.md").read_text(), re.M)
    assert {name for name, _ in listed} == {"config.json", "model.safetensors", "expected.npz", "expected64.npz"}
    for name, digest in listed:
        assert hashlib.sha256((PARITY / name).read_bytes()).hexdigest() == digest, name
