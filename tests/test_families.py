"""One suite over every supported family, each built tiny from a config in its default attention.

Adding a family means one spec in hfrel/models/_families.py and one case in tests/tiny.py; every
test here then runs on it.
"""

from __future__ import annotations

import pytest
import torch

import hfrel
from hfrel._lrp import head_start, propagate
from hfrel.models._families import BUILTIN_FAMILIES
from tests import tiny
from tests.checks import (
    CLASS_SPECIFIC,
    assert_batch_equals_each_sample_alone,
    assert_explaining_leaves_the_model_as_found,
    assert_usable_maps,
)

CASES = list(tiny.CASES)


def test_every_builtin_family_has_a_case():
    seen = set()
    for name in [*CASES, *tiny.BACKBONES, *tiny.NAFLEX_CASES, *tiny.HIERARCHICAL]:  # own suites: naflex, swin
        with hfrel.attach(tiny.build(name)) as explainer:
            seen.add(explainer.family)
    assert seen == {spec.name for spec in BUILTIN_FAMILIES}


@pytest.mark.parametrize("name", CASES)
def test_every_method_gives_finite_maps_of_the_right_shape(name, pixels):
    model = tiny.build(name)
    assert model.config._attn_implementation == "sdpa"
    with hfrel.attach(model) as explainer:
        results = explainer.explain(pixels, method=hfrel.methods())
    assert_usable_maps(results, grid=(4, 4), image=(3, 32, 32))


@pytest.mark.parametrize("name", CASES)
def test_maps_depend_on_the_target_class(name, pixels):
    with hfrel.attach(tiny.build(name)) as explainer:
        first = explainer.explain(pixels, 0, method=[*CLASS_SPECIFIC, "rollout"])
        second = explainer.explain(pixels, 1, method=[*CLASS_SPECIFIC, "rollout"])
    for method in CLASS_SPECIFIC:
        assert not torch.allclose(first[method].relevance, second[method].relevance), method
    torch.testing.assert_close(first["rollout"].relevance, second["rollout"].relevance)


@pytest.mark.parametrize("name", CASES)
def test_captured_attention_equals_eager_output_attentions(name, pixels):
    eager = tiny.build(name, attn_implementation="eager")
    with torch.no_grad():
        expected = eager(pixels, output_attentions=True).attentions
    with hfrel.attach(tiny.build(name)) as explainer:
        captured = explainer.attention_maps(pixels)
    assert len(captured) == len(expected) == 2
    for got, want in zip(captured, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_cvpr_relevance_is_conserved_through_every_block(name):
    """The CVPR rules conserve: each block's input carries the one-hot's total, 1 per target and image."""
    model = tiny.build(name).double()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with hfrel.attach(model) as explainer, explainer._eval_mode(), torch.no_grad():
        tape = explainer._recorder.new_tape(activations=True)
        logits = model(pixel_values=pixels).logits
        onehot = torch.zeros(2, *logits.shape, dtype=torch.float64)
        onehot[0, :, 0] = 1.0
        onehot[1, :, 3] = 1.0
        relevance = propagate(
            explainer._resolved, tape, head_start(explainer._resolved, tape, onehot), "cvpr", down_to=0, to_pixels=True
        )
    assert sorted(relevance.totals) == [0, 1]
    for total in relevance.totals.values():
        torch.testing.assert_close(total, torch.ones(2, 2, dtype=torch.float64), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", CASES)
def test_attach_and_detach_leave_the_model_as_found(name, pixels):
    assert_explaining_leaves_the_model_as_found(tiny.build(name), pixel_values=pixels)


@pytest.mark.parametrize("name", CASES)
def test_batch_equals_each_sample_alone(name, pixels):
    assert_batch_equals_each_sample_alone(
        tiny.build(name), pixels, ["transformer_attribution", "attention_gradcam", "lrp"]
    )


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("size", [(48, 40), (24, 24)])
def test_any_image_size(name, size):
    height, width = size
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))
    with hfrel.attach(tiny.build(name)) as explainer:
        results = explainer.explain(pixels, method=hfrel.methods(), interpolate_pos_encoding=True)
    for method, exp in results.items():
        grid = (height, width) if method == "lrp" else (height // 8, width // 8)
        assert exp.relevance.shape == (2, *grid), method
        assert exp.heatmap.shape == (2, height, width), method
        assert torch.isfinite(exp.relevance).all(), method


@pytest.mark.parametrize("name", CASES)
def test_several_classes_per_image_equal_one_call_each(name, pixels):
    """Labels of shape (B, K) share one forward pass and give the K maps one call per class would."""
    labels = torch.tensor([[0, 3], [1, 4], [2, 0]])
    with hfrel.attach(tiny.build(name)) as explainer:
        both = explainer.explain(pixels, labels, method=hfrel.methods())
        for k in range(2):
            alone = explainer.explain(pixels, labels[:, k], method=hfrel.methods())
            for method in hfrel.methods():
                assert both[method].relevance.shape[:2] == (3, 2)
                assert both[method].heatmap.shape == (3, 2, 32, 32)
                assert torch.equal(both[method].labels, labels)
                torch.testing.assert_close(
                    both[method].relevance[:, k], alone[method].relevance, rtol=1e-4, atol=1e-6, msg=method
                )
