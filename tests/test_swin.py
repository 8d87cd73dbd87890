"""Swin and SwinV2: the shared family checks, plus a slow, independent implementation of the windowed
definitions (docs/methods.md, "Hierarchical models") that hfrel must match.

The reference below knows nothing of hfrel's layouts: it reads every block's attention from the model's
own eager attention (hooks on the blocks' outputs), places each window in the stage's token-by-token
matrix with explicit loops over windows and slots (shift and padding undone by hand), builds each merge
as an explicit matrix, and multiplies dense float64 matrices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hfrel
from hfrel._explainer import Explainer
from hfrel._lrp import head_start, propagate
from hfrel._methods import METHODS
from tests import tiny
from tests.checks import (
    CLASS_SPECIFIC,
    assert_batch_equals_each_sample_alone,
    assert_explaining_leaves_the_model_as_found,
    assert_usable_maps,
)
from tests.state import assert_same, snapshot

CASES = list(tiny.HIERARCHICAL)
GRID = (16, 16)  # 32 px / patch 2


def _warm(model: torch.nn.Module) -> torch.nn.Module:
    """One plain forward first: Swin blocks set their own window and shift on their first forward."""
    with torch.no_grad():
        model(pixel_values=torch.zeros(1, 3, 32, 32))
    return model


# --- the shared family checks ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_every_method_gives_finite_maps_on_the_first_stage_grid(name, pixels):
    with hfrel.attach(tiny.build(name)) as explainer:
        results = explainer.explain(pixels, method=hfrel.methods())
    assert_usable_maps(results, grid=GRID, image=(3, 32, 32))


@pytest.mark.parametrize("name", CASES)
def test_maps_depend_on_the_target_class(name, pixels):
    with hfrel.attach(tiny.build(name)) as explainer:
        first = explainer.explain(pixels, 0, method=[*CLASS_SPECIFIC, "rollout", "attention"])
        second = explainer.explain(pixels, 1, method=[*CLASS_SPECIFIC, "rollout", "attention"])
    for method in CLASS_SPECIFIC:
        assert not torch.allclose(first[method].relevance, second[method].relevance), method
    for method in ("rollout", "attention"):
        torch.testing.assert_close(first[method].relevance, second[method].relevance)


@pytest.mark.parametrize("name", CASES)
def test_attach_and_detach_leave_the_model_as_found(name, pixels):
    assert_explaining_leaves_the_model_as_found(_warm(tiny.build(name)), pixel_values=pixels)


# Batch and class splits are checked in float64: through six blocks and two merges, the LRP rules'
# divisions by near-cancelling sums (residual adds, q.k, A v) turn float32 rounding differences between
# batch shapes into differences of up to tens of percent in a few entries (measured; 1e-13 in float64).
# The gradient-only and attention methods are checked in float32 too.


@pytest.mark.parametrize("name", CASES)
def test_batch_equals_each_sample_alone(name, pixels):
    with hfrel.attach(tiny.build(name).double()) as explainer:
        batch = explainer.explain(pixels.double(), [0, 1, 2], method=hfrel.methods())
        for i in range(len(pixels)):
            alone = explainer.explain(pixels[i : i + 1].double(), [i], method=hfrel.methods())
            for method in hfrel.methods():
                torch.testing.assert_close(
                    alone[method].relevance[0], batch[method].relevance[i], rtol=1e-6, atol=1e-12, msg=method
                )


@pytest.mark.parametrize("name", CASES)
def test_batch_equals_each_sample_alone_in_float32_without_lrp(name, pixels):
    assert_batch_equals_each_sample_alone(
        tiny.build(name), pixels, ["generic_attention", "rollout", "attention", "attention_gradcam"]
    )


@pytest.mark.parametrize("name", CASES)
def test_several_classes_per_image_equal_one_call_each(name, pixels):
    labels = torch.tensor([[0, 3], [1, 4], [2, 0]])
    with hfrel.attach(tiny.build(name).double()) as explainer:
        both = explainer.explain(pixels.double(), labels, method=hfrel.methods())
        for k in range(2):
            alone = explainer.explain(pixels.double(), labels[:, k], method=hfrel.methods())
            for method in hfrel.methods():
                assert both[method].relevance.shape[:2] == (3, 2)
                torch.testing.assert_close(
                    both[method].relevance[:, k], alone[method].relevance, rtol=1e-6, atol=1e-12, msg=method
                )


@pytest.mark.parametrize(
    "name,size",
    [("swin", (30, 27)), ("swin", (48, 40)), ("swinv2", (30, 27)), ("swinv2", (24, 40)), ("swin-absolute", (48, 40))],
)
def test_any_image_size_the_model_accepts_padding_included(name, size):
    """Odd sizes pad to whole patches, windows and merges; maps are cropped back to the image."""
    height, width = size
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))
    kwargs = {"interpolate_pos_encoding": True} if name == "swin-absolute" else {}
    with hfrel.attach(tiny.build(name)) as explainer:
        results = explainer.explain(pixels, method=hfrel.methods(), **kwargs)
    grid = (math.ceil(height / 2), math.ceil(width / 2))
    for method, exp in results.items():
        assert exp.relevance.shape == (2, *((height, width) if method == "lrp" else grid)), method
        assert exp.heatmap.shape == (2, height, width), method
        assert torch.isfinite(exp.relevance).all() and exp.relevance.abs().sum() > 0, method


@pytest.mark.parametrize("size", [(24, 40), (16, 16), (20, 36)])
def test_sizes_swin_cannot_run_are_refused_before_the_model_runs(size):
    """Swin (v1) fails on a stage grid smaller than its window and keeps the shrunken window afterwards;
    hfrel refuses such sizes up front, so the model still explains its own size after the refusal."""
    model = _warm(tiny.build("swin"))
    before = snapshot(model)
    windows = [(block.window_size, block.shift_size) for block in _blocks(model)]
    with hfrel.attach(model) as explainer:
        with pytest.raises(hfrel.InputError, match=r"cannot take .* smaller than its 4x4 windows"):
            explainer.explain(torch.randn(1, 3, *size))
        assert explainer.explain(torch.randn(1, 3, 32, 32)).relevance.shape == (1, *GRID)
    assert windows == [(block.window_size, block.shift_size) for block in _blocks(model)]
    assert_same(before, snapshot(model))


def test_absolute_position_embeddings_need_the_flag_at_other_sizes():
    with hfrel.attach(tiny.build("swin-absolute")) as explainer, pytest.raises(hfrel.InputError, match="interpolate"):
        explainer.explain(torch.randn(1, 3, 48, 40))


@pytest.mark.parametrize("name", CASES)
def test_captured_attention_equals_eager_attention_in_the_stage_matrix(name, pixels):
    expected = _eager_attention(name, pixels)
    with hfrel.attach(tiny.build(name)) as explainer:
        captured = explainer.attention_maps(pixels)
    assert len(captured) == len(expected) == 6
    for (probs, layout), got in zip(expected, captured, strict=True):
        want = torch.from_numpy(_dense(probs.numpy(), layout, heads=True))
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


# --- conservation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_cvpr_relevance_is_conserved_through_every_block_and_merge(name, monkeypatch):
    """float64: each block's input and each merge's sources carry the one-hot's total, 1 per target and image.

    The rules conserve exactly up to what safe division leaks: the 1e-9 in each denominator (about 3e-8
    per block with 256 tokens; made negligible here) and, by definition, all relevance over a denominator
    that is exactly 0 (random tiny weights can give a few; this seed gives none).
    """
    monkeypatch.setattr("hfrel._lrp.EPS", 1e-20)
    model = tiny.build(name, seed=3).double()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with hfrel.attach(model) as explainer, explainer._eval_mode(), torch.no_grad():
        tape = explainer._recorder.new_tape(activations=True)
        logits = model(pixel_values=pixels).logits
        onehot = torch.zeros(2, *logits.shape, dtype=torch.float64)
        onehot[0, :, 0] = 1.0
        onehot[1, :, 3] = 1.0
        start = head_start(explainer._resolved, tape, onehot)
        relevance = propagate(explainer._resolved, tape, start, "cvpr", down_to=0, to_pixels=True)
    assert sorted(relevance.totals) == list(range(6))
    assert sorted(relevance.merges) == [2, 4]
    ones = torch.ones(2, 2, dtype=torch.float64)
    for index, total in relevance.totals.items():
        torch.testing.assert_close(total, ones, rtol=1e-7, atol=1e-7, msg=f"block {index}")
    for index, per_token in relevance.merges.items():
        torch.testing.assert_close(per_token.sum(-1), ones, rtol=1e-7, atol=1e-7, msg=f"merge below {index}")


# --- the slow, independent reference ----------------------------------------------------------------------


def _stage_grids(height: int, width: int, patch: int, stages: int) -> list[tuple[int, int]]:
    grids = [(-(-height // patch), -(-width // patch))]
    for _ in range(stages - 1):
        h, w = grids[-1]
        grids.append(((h + 1) // 2, (w + 1) // 2))
    return grids


def _slots(height: int, width: int, window: int, shift: int) -> list[list[int | None]]:
    """For each window, for each slot (row-major), the raster index of its token in the stage; None: padding."""
    padded_h = -(-height // window) * window
    padded_w = -(-width // window) * window
    windows = []
    for wi in range(padded_h // window):
        for wj in range(padded_w // window):
            slots = []
            for a in range(window):
                for b in range(window):
                    # the rolled grid's (p, q) holds the padded grid's ((p + shift) mod, (q + shift) mod)
                    r = (wi * window + a + shift) % padded_h
                    c = (wj * window + b + shift) % padded_w
                    slots.append(r * width + c if r < height and c < width else None)
            windows.append(slots)
    return windows


def _dense(probs: np.ndarray, layout: tuple[int, int, int, int], heads: bool = False) -> np.ndarray:
    """(B*windows, [H,] area, area) -> (B, [H,] N, N) in raster order, by loops."""
    height, width, window, shift = layout
    windows = _slots(height, width, window, shift)
    batch = probs.shape[0] // len(windows)
    n = height * width
    shape = (batch, probs.shape[1], n, n) if heads else (batch, n, n)
    out = np.zeros(shape, dtype=np.float64)
    for b in range(batch):
        for w, slots in enumerate(windows):
            block = probs[b * len(windows) + w]
            for i, ti in enumerate(slots):
                for j, tj in enumerate(slots):
                    if ti is not None and tj is not None:
                        out[b, ..., ti, tj] = block[..., i, j]
    return out


def _merge_matrix(height: int, width: int) -> np.ndarray:
    """(N_{s+1}, N_s): merged token j's row passes to its real 2x2 sources in equal shares."""
    merged_w = (width + 1) // 2
    matrix = np.zeros((((height + 1) // 2) * merged_w, height * width))
    for r in range(height):
        for c in range(width):
            matrix[(r // 2) * merged_w + c // 2, r * width + c] = 1.0
    return matrix / matrix.sum(axis=1, keepdims=True)


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [block for stage in model.base_model.encoder.layers for block in stage.blocks]


def _eager_model(name: str) -> torch.nn.Module:
    return tiny.build(name, attn_implementation="eager")


def _eager_attention(name: str, pixels: torch.Tensor, label: int | None = None):
    """Every block's attention probabilities (B*windows, H, area, area) from the model's eager attention,
    each with its layout (height, width, window, shift); and, with `label`, the gradient of that logit."""
    model = _eager_model(name)
    blocks = _blocks(model)
    records: list[torch.Tensor] = []
    grids: list[tuple[int, int]] = []

    def keep(module, args, kwargs, output):
        records.append(output[1])
        grid = args[1] if len(args) > 1 else kwargs["input_dimensions"]
        grids.append((int(grid[0]), int(grid[1])))

    handles = [block.register_forward_hook(keep, with_kwargs=True) for block in blocks]
    try:
        with torch.enable_grad():
            kwargs = {"output_attentions": True} if "v2" in name else {}
            logits = model(pixel_values=pixels, **kwargs).logits
            grads = None
            if label is not None:
                grads = torch.autograd.grad(logits[:, label].sum(), records)
    finally:
        for handle in handles:
            handle.remove()
    layouts = [
        (h, w, int(block.window_size), int(block.shift_size)) for (h, w), block in zip(grids, blocks, strict=True)
    ]
    probs = [(p.detach().double(), layout) for p, layout in zip(records, layouts, strict=True)]
    if label is None:
        return probs
    return probs, [g.double() for g in grads], model


def _reference(name: str, pixels: torch.Tensor, label: int, method: str, start_layer: int = 0) -> np.ndarray:
    """generic_attention or rollout from the definitions: dense per-stage matrices, explicit merges; the map
    is the departure of the rolled-out readout from the readout carried alone (every block the identity)."""
    probs, grads, model = _eager_attention(name, pixels, label)
    depths = list(model.config.depths)
    first_of_stage = np.cumsum([0, *depths])[1:-1].tolist()  # first block after each merge
    grids = _stage_grids(*pixels.shape[-2:], model.config.patch_size, len(depths))
    stage_of = [s for s, depth in enumerate(depths) for _ in range(depth)]
    maps = []
    for b in range(pixels.shape[0]):
        last = grids[-1][0] * grids[-1][1]
        row = np.full(last, 1.0 / last)
        alone = row.copy()
        for layer in range(len(probs) - 1, -1, -1):
            if layer >= start_layer:
                a, layout = probs[layer]
                windows = len(_slots(*layout))
                a = a[b * windows : (b + 1) * windows].numpy()
                n = layout[0] * layout[1]
                if method == "generic_attention":
                    g = grads[layer][b * windows : (b + 1) * windows].numpy()
                    c = _dense(np.clip(g * a, 0, None).mean(axis=1), layout)[0]
                    row = row @ (np.eye(n) + c)
                else:
                    mixed = _dense(a.mean(axis=1), layout)[0] + np.eye(n)
                    row = row @ (mixed / mixed.sum(axis=1, keepdims=True))
            if layer in first_of_stage:
                merge = _merge_matrix(*grids[stage_of[layer] - 1])
                row, alone = row @ merge, alone @ merge
        maps.append((row - alone).reshape(grids[0]))
    return np.stack(maps)


@pytest.mark.parametrize("name", ["swin", "swinv2"])
@pytest.mark.parametrize("method", ["generic_attention", "rollout"])
@pytest.mark.parametrize("size", [(32, 32), (30, 27)])
def test_generic_attention_and_rollout_match_the_slow_reference(name, method, size):
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(4))
    expected = _reference(name, pixels, label=2, method=method)
    with hfrel.attach(tiny.build(name)) as explainer:
        got = explainer.explain(pixels, 2, method=method).relevance.double().numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_start_layer_skips_blocks_but_keeps_the_merges():
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    expected = _reference("swin", pixels, label=1, method="generic_attention", start_layer=3)
    with hfrel.attach(tiny.build("swin")) as explainer:
        got = explainer.explain(pixels, 1, method="generic_attention", start_layer=3).relevance.double().numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


# --- one window, no shift, no merge: the plain ViT formulas ------------------------------------------------


def _one_window_swin() -> torch.nn.Module:
    import transformers as tf

    config = tf.SwinConfig(**{**tiny.SWIN_COMMON, "depths": [2], "num_heads": [2], "image_size": 16, "window_size": 8})
    torch.manual_seed(0)
    model = tf.SwinForImageClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.3)
    return model.eval()


def test_one_window_without_shift_reduces_to_the_plain_vit_formulas(monkeypatch):
    """With the window covering the whole 8x8 grid, every block's layout is the identity, and every method
    computed through the windowed path equals the same evidence read as plain (B, H, N, N) attention."""
    seen = []
    original = Explainer._explanation

    def spy(self, method, evidence, *args):
        seen.append(evidence)
        return original(self, method, evidence, *args)

    monkeypatch.setattr(Explainer, "_explanation", spy)
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    with hfrel.attach(_one_window_swin()) as explainer:
        results = explainer.explain(pixels, [1, 3], method=hfrel.methods())
    evidence = seen[0]
    assert not evidence.merges
    for layout in evidence.layouts:
        assert (layout.window, layout.shift, layout.windows) == (8, 0, 1)
        assert torch.equal(layout.token_of_slot(), torch.arange(64))
    plain = type(evidence)(**{**vars(evidence), "layouts": []})
    for name in hfrel.methods():
        want = METHODS[name].compute(plain)
        got = results[name].relevance
        torch.testing.assert_close(got, want.reshape(got.shape), rtol=1e-6, atol=1e-9, msg=name)
    # and the ViT formula written out: readout . (I + C_1)(I + C_0), mean readout, dense matrices
    probs = [p.double() for p in evidence.probs]
    grads = [evidence.grads[i].double() for i in range(2)]
    product = torch.eye(64, dtype=torch.float64)
    for layer in (1, 0):
        product = product @ (torch.eye(64, dtype=torch.float64) + (grads[layer] * probs[layer]).clamp(min=0).mean(2))
    want = product.mean(dim=-2) - 1 / 64  # the departure from the mean readout
    torch.testing.assert_close(
        results["generic_attention"].relevance.double().flatten(1), want[0], rtol=1e-5, atol=1e-9
    )
