"""The relevance walk's shortcuts change no map beyond rounding: each is checked against the walk without it.

- Live rows: the top block runs its token-wise rules only on the tokens relevance enters at (CLS, say).
- Rebuilt activation: the tape keeps the first MLP linear's output instead of the second's input, rebuilt by
  the block's activation module, so the first linear's CVPR denominator takes one matrix product.
Both are compared in float64 to 1e-9 relative: rounding alone, far below the 1e-6 the parity tests ask for.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hfrel
from hfrel import _lrp
from hfrel.models import _spec
from tests import tiny

METHODS = ["transformer_attribution", "partial_lrp", "lrp"]


def _maps(model: nn.Module, pixels: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    with hfrel.attach(model) as explainer:
        return {m: explainer.explain(pixels, label, method=m).relevance for m in METHODS}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for name in METHODS:
        scale = b[name].abs().max()
        assert scale > 0
        assert ((a[name] - b[name]).abs().max() / scale).item() < 1e-9, name


def _model(name: str) -> nn.Module:
    return tiny.build(name).to(torch.float64).eval()


def _inputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return pixels, torch.tensor([[0, 3], [1, 1], [4, 2]])


@pytest.mark.parametrize("name", ["vit", "deit-distilled", "beit-cls"])
def test_live_rows_of_the_top_block_give_the_full_walks_maps(name, monkeypatch):
    model = _model(name)
    pixels, label = _inputs(model)
    seen = []
    live_rows = _lrp._live_rows

    def spy(relevance):
        rows = live_rows(relevance)
        seen.append(None if rows is None else rows.tolist())
        return rows

    monkeypatch.setattr(_lrp, "_live_rows", spy)
    short = _maps(model, pixels, label)
    assert seen and all(rows == ([0, 1] if name == "deit-distilled" else [0]) for rows in seen)
    monkeypatch.setattr(_lrp, "_live_rows", lambda relevance: None)
    _close(short, _maps(model, pixels, label))


def test_mean_pooled_heads_walk_every_row():
    relevance = torch.zeros(2, 3, 5, 4)
    relevance[..., 1:, :] = 1.0
    assert _lrp._live_rows(relevance) is None
    relevance[..., 2:, :] = 0.0
    assert _lrp._live_rows(relevance).tolist() == [1]
    assert _lrp._live_rows(torch.zeros(2, 3, 5, 4)) is None


def _tape_keeps(model: nn.Module, pixels: torch.Tensor) -> tuple[bool, bool]:
    """Whether the tape the relevance walk reads kept (the first MLP linear's output, the second's input)."""
    kept = []
    block_relevance = _lrp._block_relevance

    def spy(block, record, *args):
        kept.append((record.mlp_pre is not None, record.mlp_h is not None))
        return block_relevance(block, record, *args)

    _lrp._block_relevance = spy
    try:
        with hfrel.attach(model) as explainer:
            explainer.explain(pixels, method="transformer_attribution")
    finally:
        _lrp._block_relevance = block_relevance
    assert len(set(kept)) == 1  # every block alike
    return kept[0]


@pytest.mark.parametrize("name", ["vit", "clip", "siglip", "swin"])
def test_rebuilt_activation_gives_the_kept_inputs_maps(name, monkeypatch):
    model = _model(name)
    pixels, label = _inputs(model)
    assert _tape_keeps(model, pixels) == (True, False)  # rebuilt: the output kept, not the input
    rebuilt = _maps(model, pixels, label)
    monkeypatch.setattr(_spec, "_activation", lambda block, mlp_in: None)  # no activation found: keep the input
    assert _tape_keeps(model, pixels) == (False, True)
    _close(rebuilt, _maps(model, pixels, label))


def test_an_activation_that_is_not_what_the_model_applies_is_not_used(monkeypatch):
    """A model whose MLP calls another function than its activation module: the tape keeps the linear's input."""
    model = _model("vit")
    pixels, label = _inputs(model)
    before = _maps(model, pixels, label)
    for layer in model.vit.layers:
        mlp = layer.mlp
        mlp.forward = lambda x, mlp=mlp: mlp.fc2(torch.tanh(mlp.fc1(x)))  # not its GELU module
    assert _tape_keeps(model, pixels) == (False, True)
    changed = _maps(model, pixels, label)
    assert not torch.allclose(changed["lrp"], before["lrp"])  # the model did change, and the maps with it
    monkeypatch.setattr(_spec, "_activation", lambda block, mlp_in: None)
    _close(changed, _maps(model, pixels, label))  # the same as a walk that never tried the rebuild
