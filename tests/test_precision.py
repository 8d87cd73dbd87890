"""Half-precision models and autocast: maps stay finite and agree with the float32 model's maps.

The relevance arithmetic always runs in float32; what half precision changes is the forward pass the
maps are read from. Measured on the trained demo model and held-out two-object scenes, both classes
explained; docs/integrations.md reports the numbers for every method.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import hfrel
from hfrel.datasets import load_demo_model, make_scenes
from hfrel.datasets._demo_model import MEASUREMENT_SEED
from hfrel.evaluation import map_correlation

AGREEING = ["transformer_attribution", "generic_attention", "rollout", "attention", "attention_gradcam"]


@pytest.fixture(scope="module")
def case():
    scenes = make_scenes(16, objects=2, seed=MEASUREMENT_SEED)
    model, _ = load_demo_model(device="cpu")
    pixels = (scenes.images - 0.5) / 0.5  # the demo processor's normalisation
    with hfrel.attach(model) as explainer:
        reference = explainer.explain(pixels, scenes.labels, method=hfrel.methods())
    return pixels, scenes.labels, reference


@pytest.mark.parametrize("precision", ["bfloat16", "float16", "autocast-bfloat16"])
def test_half_precision_agrees_with_float32(case, precision):
    pixels, labels, reference = case
    model, _ = load_demo_model(device="cpu")
    autocast = precision.startswith("autocast")
    if not autocast:
        model = model.to(getattr(torch, precision))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with hfrel.attach(model) as explainer, context:
        results = explainer.explain(pixels, labels, method=hfrel.methods())
    for method, exp in results.items():
        assert exp.relevance.dtype == torch.float32, method
        assert torch.isfinite(exp.relevance).all() and torch.isfinite(exp.heatmap).all(), method
        assert torch.equal(exp.labels, labels)
    for method in AGREEING:
        agreement = map_correlation(results[method].relevance, reference[method].relevance)
        assert agreement.mean() >= 0.99, (method, agreement.mean().item())
