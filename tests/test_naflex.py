"""The family suite for NaFlex models (Siglip2): each image at its own aspect ratio, padded in one batch.

Maps come back on each image's own patch grid, top-left in a padded tensor whose padding is exactly 0;
padding patches take no part: an image explained in a padded batch equals the image alone, unpadded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf
from torch.nn import functional as F

import hfrel
from hfrel._lrp import head_start, propagate
from tests import tiny
from tests.checks import CLASS_SPECIFIC, assert_explaining_leaves_the_model_as_found

PATCH = 8
SHAPES = [(2, 6), (4, 4), (3, 5)]  # each image's own grid of patches, rows x cols


def patchify(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (rows * cols, p * p * C), row by row, each patch as (py, px, c): the processor's layout."""
    channels, height, width = image.shape
    rows, cols = height // PATCH, width // PATCH
    out = torch.empty(rows * cols, PATCH * PATCH * channels, dtype=image.dtype)
    for r in range(rows):
        for c in range(cols):
            block = image[:, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH]
            out[r * cols + c] = block.permute(1, 2, 0).reshape(-1)
    return out


def naflex_batch(shapes, patches=16, seed=0, dtype=torch.float32):
    """Random images of the given grids, cut into patches and padded to `patches`, as the processor does."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.zeros(len(shapes), patches, 3 * PATCH * PATCH, dtype=dtype)
    mask = torch.zeros(len(shapes), patches, dtype=torch.int32)
    for i, (rows, cols) in enumerate(shapes):
        image = torch.randn(3, rows * PATCH, cols * PATCH, generator=generator, dtype=dtype)
        pixel_values[i, : rows * cols] = patchify(image)
        mask[i, : rows * cols] = 1
    return dict(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=torch.tensor(shapes))


def alone(inputs, index, padded=True):
    """Image `index` of a batch by itself: with its padding, or cut to its own patches."""
    rows, cols = inputs["spatial_shapes"][index].tolist()
    end = inputs["pixel_values"].shape[1] if padded else rows * cols
    return {
        "pixel_values": inputs["pixel_values"][index : index + 1, :end],
        "pixel_attention_mask": inputs["pixel_attention_mask"][index : index + 1, :end],
        "spatial_shapes": inputs["spatial_shapes"][index : index + 1],
    }


@pytest.fixture(scope="module")
def inputs():
    return naflex_batch(SHAPES)


@pytest.fixture(scope="module")
def model():
    return tiny.build("siglip2")


def test_every_method_gives_maps_on_each_images_own_grid(model, inputs):
    assert model.config._attn_implementation == "sdpa"
    with hfrel.attach(model) as explainer:
        results = explainer.explain(**inputs, method=hfrel.methods())
    grids = torch.tensor(SHAPES)
    for method, exp in results.items():
        scale = PATCH if method == "lrp" else 1
        assert exp.relevance.shape == (3, 4 * scale, 6 * scale), method
        assert exp.heatmap.shape == (3, 4 * PATCH, 6 * PATCH), method
        assert torch.equal(exp.sizes, grids * scale), method
        assert torch.equal(exp.heatmap_sizes, grids * PATCH), method
        for i, (rows, cols) in enumerate(SHAPES):
            relevance, heatmap = exp.image(i)
            assert relevance.shape == (rows * scale, cols * scale), method
            assert heatmap.shape == (rows * PATCH, cols * PATCH), method
            assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0, method
            assert heatmap.min() == 0 and heatmap.max() == 1, method
            padding = torch.ones_like(exp.relevance[i], dtype=torch.bool)
            padding[: rows * scale, : cols * scale] = False
            assert (exp.relevance[i][padding] == 0).all(), method
            padding = torch.ones_like(exp.heatmap[i], dtype=torch.bool)
            padding[: rows * PATCH, : cols * PATCH] = False
            assert (exp.heatmap[i][padding] == 0).all(), method


def test_maps_depend_on_the_target_class(model, inputs):
    with hfrel.attach(model) as explainer:
        first = explainer.explain(**inputs, label=0, method=[*CLASS_SPECIFIC, "rollout"])
        second = explainer.explain(**inputs, label=1, method=[*CLASS_SPECIFIC, "rollout"])
    for method in CLASS_SPECIFIC:
        assert not torch.allclose(first[method].relevance, second[method].relevance), method
    torch.testing.assert_close(first["rollout"].relevance, second["rollout"].relevance)


def test_captured_attention_equals_eager_output_attentions(inputs):
    eager = tiny.build("siglip2", attn_implementation="eager")
    with torch.no_grad():
        expected = eager(**inputs, output_attentions=True).attentions
    with hfrel.attach(tiny.build("siglip2")) as explainer:
        captured = explainer.attention_maps(**inputs)
    assert len(captured) == len(expected) == 2
    for got, want in zip(captured, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_cvpr_relevance_is_conserved_through_every_block():
    """Relevance starts on each image's real tokens only and keeps its total, 1 per target and image."""
    model = tiny.build("siglip2").double()
    inputs = naflex_batch(SHAPES, dtype=torch.float64)
    with hfrel.attach(model) as explainer, explainer._eval_mode(), torch.no_grad():
        shapes = {k: v for k, v in inputs.items() if k != "pixel_values"}
        pixels, kwargs = explainer._check_inputs(inputs["pixel_values"], shapes)
        tape = explainer._recorder.new_tape(activations=True)
        logits = model(pixel_values=pixels, **kwargs).logits
        tape.layout = explainer._layout(tape, kwargs)
        onehot = torch.zeros(2, *logits.shape, dtype=torch.float64)
        onehot[0, :, 0] = 1.0
        onehot[1, :, 3] = 1.0
        start = head_start(explainer._resolved, tape, onehot)
        relevance = propagate(explainer._resolved, tape, start, "cvpr", down_to=0, to_pixels=False)
    for total in relevance.totals.values():
        torch.testing.assert_close(total, torch.ones(2, 3, dtype=torch.float64), rtol=1e-7, atol=1e-7)


def test_attach_and_detach_leave_the_model_as_found(inputs):
    assert_explaining_leaves_the_model_as_found(tiny.build("siglip2"), **inputs)


def test_batch_equals_each_sample_alone(model, inputs):
    with hfrel.attach(model) as explainer:
        batch = explainer.explain(**inputs, label=[0, 1, 2], method=hfrel.methods())
        for i in range(len(SHAPES)):
            one = explainer.explain(**alone(inputs, i), label=[i], method=hfrel.methods())
            for method in hfrel.methods():
                for got, want in zip(one[method].image(0), batch[method].image(i), strict=True):
                    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=method)


def test_padding_takes_no_part():
    """An image in a padded batch gives the maps of the image alone, cut to its own patches.

    float64, but the model's softmax and position resizing run in float32 (as in transformers' eager
    code), so the maps agree to about 1e-5 of their largest value, not to float64 precision.
    """
    model = tiny.build("siglip2").double()
    inputs = naflex_batch([(2, 5), (3, 6), (1, 4)], patches=18, seed=4, dtype=torch.float64)  # 18 > 16 positions
    with hfrel.attach(model) as explainer:
        batch = explainer.explain(**inputs, label=[0, 1, 2], method=hfrel.methods())
        for i in range(3):
            one = explainer.explain(**alone(inputs, i, padded=False), label=[i], method=hfrel.methods())
            for method in hfrel.methods():
                assert one[method].relevance.shape[-2:] == batch[method].image(i)[0].shape, method
                for got, want in zip(one[method].image(0), batch[method].image(i), strict=True):
                    scale = want.abs().max().item()
                    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale, msg=method)


def test_several_classes_per_image_equal_one_call_each(model, inputs):
    labels = torch.tensor([[0, 3], [1, 4], [2, 0]])
    with hfrel.attach(model) as explainer:
        both = explainer.explain(**inputs, label=labels, method=hfrel.methods())
        for k in range(2):
            one = explainer.explain(**inputs, label=labels[:, k], method=hfrel.methods())
            for method in hfrel.methods():
                assert both[method].heatmap.shape == (3, 2, 32, 48)
                torch.testing.assert_close(both[method].relevance[:, k], one[method].relevance, rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(both[method].heatmap[:, k], one[method].heatmap, rtol=1e-4, atol=1e-5)


def _slow_maps(attentions, shapes):
    """attention and rollout from eager output_attentions, with loops and explicit grid indices (float64)."""
    attention, rollout = [], []
    for b, (rows, cols) in enumerate(shapes):
        n = rows * cols
        readout = torch.full((n,), 1.0 / n, dtype=torch.float64)  # the mean of the image's own tokens
        last = attentions[-1][b].double()[:, :n, :n]
        raw = torch.zeros(rows, cols, dtype=torch.float64)
        row = readout.clone()
        for layer in reversed(attentions):
            a = layer[b].double()[:, :n, :n].mean(dim=0) + torch.eye(n, dtype=torch.float64)
            row = row @ (a / a.sum(dim=-1, keepdim=True))
        rolled = torch.zeros(rows, cols, dtype=torch.float64)
        for t in range(n):
            r, c = divmod(t, cols)
            raw[r, c] = sum(readout[q] * last[:, q, t].mean() for q in range(n))
            rolled[r, c] = row[t] - readout[t]  # the map is the departure from the readout (docs/methods.md)
        attention.append(raw)
        rollout.append(rolled)
    return attention, rollout


def test_attention_and_rollout_match_a_slow_reference(model, inputs):
    with torch.no_grad():
        eager = tiny.build("siglip2", attn_implementation="eager")
        attentions = eager(**inputs, output_attentions=True).attentions
    with hfrel.attach(model) as explainer:
        results = explainer.explain(**inputs, method=["attention", "rollout"])
    attention, rollout = _slow_maps(attentions, SHAPES)
    for i in range(len(SHAPES)):
        torch.testing.assert_close(results["attention"].image(i)[0].double(), attention[i], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(results["rollout"].image(i)[0].double(), rollout[i], rtol=1e-4, atol=1e-7)


def test_heatmaps_are_each_images_map_upsampled_and_normalised_alone(model, inputs):
    with hfrel.attach(model) as explainer:
        results = explainer.explain(**inputs, method=["attention", "lrp"])
    for exp in results.values():
        for i, (rows, cols) in enumerate(SHAPES):
            relevance, heatmap = exp.image(i)
            up = F.interpolate(relevance[None, None], size=(rows * PATCH, cols * PATCH), mode="bilinear")[0, 0]
            expected = (up - up.min()) / (up.max() - up.min())
            torch.testing.assert_close(heatmap, expected, rtol=1e-4, atol=1e-5, msg=exp.method)


def test_image_processor_output_explains_as_is(model):
    processor = tf.Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=16)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 100, 3), dtype=np.uint8), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    inputs = processor(images=images, return_tensors="pt")
    with hfrel.attach(model) as explainer:
        exp = explainer.explain(**inputs)
    assert torch.equal(exp.sizes, inputs["spatial_shapes"])
    for i in range(2):
        rows, cols = inputs["spatial_shapes"][i].tolist()
        assert exp.image(i)[1].shape == (rows * PATCH, cols * PATCH)


def test_naflex_input_errors(model, inputs):
    with hfrel.attach(model) as explainer:
        with pytest.raises(hfrel.InputError, match="spatial_shapes"):
            explainer.explain(inputs["pixel_values"], pixel_attention_mask=inputs["pixel_attention_mask"])
        with pytest.raises(hfrel.InputError, match=r"\(B, P, 192\)"):
            explainer.explain(torch.randn(2, 3, 32, 32))
        with pytest.raises(hfrel.InputError, match="pixel_attention_mask too"):
            explainer.explain(inputs["pixel_values"], spatial_shapes=inputs["spatial_shapes"])
        shifted = inputs["pixel_attention_mask"].roll(1, dims=1)
        with pytest.raises(hfrel.InputError, match="real patches first"):
            explainer.explain(**{**inputs, "pixel_attention_mask": shifted})
        with pytest.raises(hfrel.InputError, match="at most the 16 patches"):
            explainer.explain(**{**inputs, "spatial_shapes": torch.tensor([[4, 5], [4, 4], [3, 5]])})
