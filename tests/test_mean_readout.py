"""Mean-pooled heads: the class-specific part of a rollout map must survive float32.

With a mean readout the rollout row starts at 1/P on every patch, and the class-dependent terms can
be a millionth of that; hfrel carries the rollout's departure from the readout instead of the row
(docs/methods.md, "What relevance holds"). These tests fail when the row itself is carried.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import hfrel
from hfrel._methods import Evidence, _rollout_product
from tests.tiny import COMMON

ROLLOUTS = ["transformer_attribution", "generic_attention", "rollout"]


def _beit_mean() -> torch.nn.Module:
    torch.manual_seed(0)
    config = tf.BeitConfig(**COMMON, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1)
    return tf.BeitForImageClassification(config).eval()


def _dinov2_small_scale() -> torch.nn.Module:
    torch.manual_seed(0)
    config = tf.Dinov2Config(
        **{k: v for k, v in COMMON.items() if k != "intermediate_size"}, mlp_ratio=2, layerscale_value=0.1
    )
    return tf.Dinov2ForImageClassification(config).eval()


MODELS = {"beit-mean": _beit_mean, "dinov2-cls+mean": _dinov2_small_scale}


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


@pytest.mark.parametrize("name", list(MODELS))
def test_class_specific_part_survives_float32(name, pixels, softmax_in_float64):
    model = MODELS[name]()
    with hfrel.attach(model) as explainer:
        first = explainer.explain(pixels, 0, method=ROLLOUTS)
        second = explainer.explain(pixels, 1, method=ROLLOUTS)
    model64 = model.double()
    with hfrel.attach(model64) as explainer:
        first64 = explainer.explain(pixels.double(), 0, method=ROLLOUTS)
        second64 = explainer.explain(pixels.double(), 1, method=ROLLOUTS)
    for method in ("transformer_attribution", "generic_attention"):
        assert not torch.equal(first[method].relevance, second[method].relevance), method
        # the two classes' maps differ by far more than float32 rounding of the maps themselves
        gap = (first64[method].relevance - second64[method].relevance).abs().max()
        assert gap > 1e-3 * first64[method].relevance.abs().max(), method
    # generic_attention and rollout are well conditioned end to end; transformer_attribution's LRP
    # is not on such a model (its residual rescaling sums cancel), so its rollout arithmetic is
    # tested on its own below
    for got, want in ((first, first64), (second, second64)):
        for method in ("generic_attention", "rollout"):
            assert relative_error(got[method].relevance, want[method].relevance) < 1e-4, method


@pytest.mark.parametrize("pooling", ["mean", "cls+mean"])
def test_rollout_product_keeps_tiny_contributions(pooling):
    """readout . (I + C_2)(I + C_1)(I + C_0) - readout for C_l a millionth of the readout, against float64."""
    tokens, patches = 17, slice(1, 17)
    readout = torch.zeros(tokens)
    readout[patches] = 1.0 / 16 if pooling == "mean" else 1.0 / 32
    if pooling == "cls+mean":
        readout[0] = 0.5
    gen = torch.Generator().manual_seed(0)
    contributions = [torch.rand(1, 2, tokens, tokens, generator=gen) * 1e-7 for _ in range(3)]
    evidence = Evidence(
        probs=[torch.empty(2, 1, tokens, tokens)] * 3,
        grads={},
        relevance={},
        readout=readout.expand(2, -1),  # (B, N): one readout row per image
        patches=patches,
        patch_weights=None,
        start_layer=0,
        targets=1,
    )
    got = _rollout_product(evidence, lambda layer: contributions[layer])
    row = readout.double().expand(1, 2, 1, tokens)  # (T, B, 1, N): one row vector per target and image
    for c in reversed(contributions):
        row = row + row @ c.double()
    expected = (row.squeeze(-2) - readout.double())[..., patches]
    assert relative_error(got, expected) < 1e-5


def test_generic_attention_equals_a_float64_product_of_full_matrices(pixels, softmax_in_float64):
    """Independent: eager attention, output_attentions, autograd, the ICCV update R <- R + C_l R."""
    model = _beit_mean()
    label = 2
    with hfrel.attach(model) as explainer:
        got = explainer.explain(pixels, label, method="generic_attention").relevance

    eager = _beit_mean()
    eager.set_attn_implementation("eager")
    eager = eager.double()
    out = eager(pixel_values=pixels.double(), output_attentions=True)
    attentions = out.attentions
    grads = torch.autograd.grad(out.logits[:, label].sum(), attentions)
    tokens = attentions[0].shape[-1]
    patches = tokens - 1  # BEiT: CLS then the patches; the head reads the mean of the patches
    readout = torch.zeros(tokens, dtype=torch.float64)
    readout[1:] = 1.0 / patches
    expected = []
    for b in range(pixels.shape[0]):
        r = torch.eye(tokens, dtype=torch.float64)
        for a, g in zip(attentions, grads, strict=True):
            c = (g[b] * a[b]).clamp(min=0).mean(dim=0)
            r = r + c @ r
        expected.append((readout @ r - readout)[1:].reshape(4, 4))
    expected = torch.stack(expected).detach()
    assert relative_error(got, expected) < 1e-4
