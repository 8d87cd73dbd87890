"""Every method reproduces the published reference code's maps (tests/data/parity), all samples in one call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hfrel

TOLERANCE = 1e-4
# (method, start_layer, key in expected.npz)
CASES = [
    ("transformer_attribution", 0, "transformer_attribution_s0"),
    ("transformer_attribution", 1, "transformer_attribution_s1"),
    ("rollout", 0, "rollout_s0"),
    ("rollout", 1, "rollout_s1"),
    ("generic_attention", 0, "generic_attention"),
    ("attention", 0, "attention"),
    ("attention_gradcam", 0, "attention_gradcam"),
    ("partial_lrp", 0, "partial_lrp"),
    ("lrp", 0, "lrp"),
]


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize(("method", "start_layer", "key"), CASES)
def test_method_matches_reference(parity_model, parity_case, method, start_layer, key):
    pixels = torch.from_numpy(parity_case["pixel_values"])
    labels = torch.from_numpy(parity_case["labels"])
    with hfrel.attach(parity_model) as explainer:
        exp = explainer.explain(pixels, labels, method=method, start_layer=start_layer)
    expected = parity_case[key]
    error = relative_error(exp.relevance.reshape(expected.shape).numpy(), expected)
    print(f"float32 parity {key}: relative error {error:.1e}")
    assert error < TOLERANCE
    np.testing.assert_allclose(exp.logits.numpy(), parity_case["logits"], rtol=1e-5, atol=1e-5)


def reference_key(method: str, start_layer: int) -> str | None:
    """The expected.npz entry for a method at a start layer (single-block methods ignore the start layer)."""
    if method in ("transformer_attribution", "rollout"):
        return f"{method}_s{start_layer}"
    if method == "generic_attention":
        return method if start_layer == 0 else None
    return method


@pytest.mark.parametrize("start_layer", [0, 1])
def test_all_methods_in_one_call_match_reference(parity_model, parity_case, start_layer):
    pixels = torch.from_numpy(parity_case["pixel_values"])
    labels = torch.from_numpy(parity_case["labels"])
    with hfrel.attach(parity_model) as explainer:
        results = explainer.explain(pixels, labels, method=hfrel.methods(), start_layer=start_layer)
    checked = 0
    for method, exp in results.items():
        key = reference_key(method, start_layer)
        if key is None:
            continue
        expected = parity_case[key]
        assert relative_error(exp.relevance.reshape(expected.shape).numpy(), expected) < TOLERANCE, method
        checked += 1
    assert checked == (7 if start_layer == 0 else 6)


def test_batch_equals_each_sample_alone(parity_model, parity_case):
    pixels = torch.from_numpy(parity_case["pixel_values"])
    labels = torch.from_numpy(parity_case["labels"])
    with hfrel.attach(parity_model) as explainer:
        batch = explainer.explain(pixels, labels, method=hfrel.methods())
        for i in range(len(pixels)):
            alone = explainer.explain(pixels[i : i + 1], labels[i : i + 1], method=hfrel.methods())
            for method in hfrel.methods():
                torch.testing.assert_close(alone[method].relevance[0], batch[method].relevance[i], rtol=1e-5, atol=1e-7)


def test_default_label_is_the_prediction(parity_model, parity_case):
    pixels = torch.from_numpy(parity_case["pixel_values"])
    with hfrel.attach(parity_model) as explainer:
        exp = explainer.explain(pixels)
    assert torch.equal(exp.labels, exp.logits.argmax(-1))
