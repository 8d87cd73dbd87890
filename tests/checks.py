"""Checks the family suites share: which methods must depend on the class, and what a usable map is."""

from __future__ import annotations

import torch
from torch import nn

import hfrel
from tests.state import assert_same, snapshot

CLASS_SPECIFIC = ["transformer_attribution", "generic_attention", "attention_gradcam", "partial_lrp", "lrp"]
"""The methods whose maps must change with the explained class (rollout and attention cannot)."""


def assert_explaining_leaves_the_model_as_found(model: nn.Module, **inputs: torch.Tensor) -> None:
    """Attach, explain `inputs` with every method, detach: the model, in train mode (dropout on, the
    harder case), is exactly as found."""
    model.train()
    before = snapshot(model)
    with hfrel.attach(model) as explainer:
        explainer.explain(**inputs, method=hfrel.methods())
    assert_same(before, snapshot(model))


def assert_usable_maps(results: dict, *, grid: tuple[int, int], image: tuple[int, int, int]) -> None:
    """Every method's relevance on the token `grid` (LRP's on the pixels), its heatmap on the pixels
    (`image`: batch, height, width), both finite, relevance not all zero, heatmap within [0, 1]."""
    for method, exp in results.items():
        expected = image if method == "lrp" else (image[0], *grid)
        assert exp.relevance.shape == expected, method
        assert exp.heatmap.shape == image, method
        assert torch.isfinite(exp.relevance).all() and torch.isfinite(exp.heatmap).all(), method
        assert exp.relevance.abs().sum() > 0, method
        assert exp.heatmap.min() >= 0 and exp.heatmap.max() <= 1, method


def assert_batch_equals_each_sample_alone(model: nn.Module, pixels: torch.Tensor, methods: list[str]) -> None:
    """Image i of a batch, explained for class i, gives the map it gets explained alone (float32 rounding)."""
    with hfrel.attach(model) as explainer:
        batch = explainer.explain(pixels, list(range(len(pixels))), method=methods)
        for i in range(len(pixels)):
            alone = explainer.explain(pixels[i : i + 1], [i], method=methods)
            for method in methods:
                torch.testing.assert_close(alone[method].relevance[0], batch[method].relevance[i], rtol=1e-4, atol=1e-6)
