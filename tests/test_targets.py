"""Targets: `label` vs `target=fn`, the hidden-state start of the LRP walk, and backbones without a head."""

from __future__ import annotations

import pytest
import torch

import hfrel
from hfrel._lrp import hidden_relevance, propagate
from tests import tiny
from tests.checks import CLASS_SPECIFIC
from tests.state import assert_same, snapshot

BACKBONES = list(tiny.BACKBONES)
GRADIENT_ONLY = ["generic_attention", "attention_gradcam", "rollout", "attention"]


def _embedding(outputs) -> torch.Tensor:
    return outputs.image_embeds if getattr(outputs, "image_embeds", None) is not None else outputs.pooler_output


def _similarity(query: torch.Tensor):
    """The cosine of each image's pooled embedding to `query` (D,) or to each row of `query` (K, D)."""

    def target(outputs) -> torch.Tensor:
        embedding = torch.nn.functional.normalize(_embedding(outputs), dim=-1)
        unit = torch.nn.functional.normalize(query, dim=-1).to(embedding.dtype)
        return embedding @ (unit if unit.dim() == 1 else unit.T)

    return target


def _query(model, rows: int | None = None, seed: int = 5) -> torch.Tensor:
    width = getattr(model.config, "projection_dim", None) if "Projection" in type(model).__name__ else None
    width = width or model.config.hidden_size
    shape = (width,) if rows is None else (rows, width)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# the hidden-state start, against a slow definition ------------------------------------------------------------


def _slow_hidden_relevance(hidden: torch.Tensor, grad: torch.Tensor, rules: str) -> torch.Tensor:
    """The linear rule of docs/methods.md for one output with weights `grad`, element by element, float64."""
    out = torch.zeros_like(grad)
    for t in range(grad.shape[0]):
        for b in range(grad.shape[1]):
            pos = neg = 0.0
            for n in range(grad.shape[2]):
                for d in range(grad.shape[3]):
                    x, w = float(hidden[b, n, d]), float(grad[t, b, n, d])
                    pos += max(x, 0) * max(w, 0)
                    neg += min(x, 0) * min(w, 0)
            for n in range(grad.shape[2]):
                for d in range(grad.shape[3]):
                    x, w = float(hidden[b, n, d]), float(grad[t, b, n, d])
                    p, q = max(x, 0) * max(w, 0), min(x, 0) * min(w, 0)
                    if rules == "cvpr":
                        out[t, b, n, d] = (p + q) / (pos + neg + 1e-9) if pos + neg != 0 else 0.0
                    else:
                        out[t, b, n, d] = (p / (pos + 1e-9) if pos else 0.0) + (q / (neg + 1e-9) if neg else 0.0)
    return out


@pytest.mark.parametrize("rules", ["cvpr", "classic"])
def test_hidden_start_equals_its_slow_definition(rules):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator)
    grad = torch.randn(2, 2, 3, 4, dtype=torch.float64, generator=generator)
    grad[1, 1] = 0.0  # a target without gradient gets no relevance, never NaN
    got = hidden_relevance(hidden, grad, rules)
    torch.testing.assert_close(got, _slow_hidden_relevance(hidden, grad, rules), rtol=1e-12, atol=1e-15)
    assert torch.equal(got[1, 1], torch.zeros(3, 4, dtype=torch.float64))


# a classifier's own logit as a target ---------------------------------------------------------------------------


def _assert_parity(got: torch.Tensor, want: torch.Tensor, tolerance: float, what: str) -> None:
    """The project's parity measure: max |got - want| / max |want|."""
    error = float((got - want).abs().max() / want.abs().max())
    assert error < tolerance, f"{what}: relative error {error:.2e}"


@pytest.mark.parametrize("name", ["vit", "deit-distilled", "beit-cls"])
def test_own_logit_as_target_reproduces_the_label_maps(name):
    """For heads that read CLS (or CLS and distillation tokens) the hidden start is the head rule: every map equal."""
    model = tiny.build(name).double()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([[1, 3], [4, 0]])
    with hfrel.attach(model) as explainer:
        by_label = explainer.explain(pixels, labels, method=hfrel.methods())
        by_target = explainer.explain(
            pixels, method=hfrel.methods(), target=lambda outputs: outputs.logits.gather(1, labels)
        )
    for method in hfrel.methods():
        _assert_parity(by_target[method].relevance, by_label[method].relevance, 1e-6, method)
        assert torch.equal(by_target[method].logits, by_label[method].logits)


@pytest.mark.parametrize("name", ["beit", "dinov2", "clip"])
def test_own_logit_as_target_on_mean_pooled_heads(name, pixels):
    """Gradient and attention methods are exact for any target; the LRP start differs from the mean-pooling rule."""
    with hfrel.attach(tiny.build(name)) as explainer:
        by_label = explainer.explain(pixels, 2, method=hfrel.methods())
        by_target = explainer.explain(pixels, method=hfrel.methods(), target=lambda outputs: outputs.logits[:, 2])
    for method in GRADIENT_ONLY:
        torch.testing.assert_close(by_target[method].relevance, by_label[method].relevance, rtol=1e-5, atol=1e-7)
    for method in ("transformer_attribution", "lrp"):
        assert torch.isfinite(by_target[method].relevance).all()
        assert not torch.allclose(by_target[method].relevance, by_label[method].relevance)


# errors ---------------------------------------------------------------------------------------------------------


def test_label_and_target_are_exclusive(pixels):
    with hfrel.attach(tiny.build("vit")) as explainer:
        with pytest.raises(hfrel.LabelError, match=r"either label .* or target"):
            explainer.explain(pixels, 1, target=lambda outputs: outputs.logits[:, 0])
        with pytest.raises(hfrel.LabelError, match="must be a function"):
            explainer.explain(pixels, target=3)


def test_backbone_needs_a_target(pixels):
    explainer = hfrel.attach(tiny.build("vit-backbone"))
    with explainer, pytest.raises(hfrel.LabelError, match=r"no classification head.*target=fn"):
        explainer.explain(pixels)


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda outputs: outputs.last_hidden_state, "one score per image"),
        (lambda outputs: outputs.pooler_output[:2, 0], "one score per image"),
        (lambda outputs: [1.0, 2.0, 3.0], "must return a torch.Tensor"),
        (lambda outputs: outputs.pooler_output[:, 0] > 0, "floating-point"),
    ],
)
def test_bad_target_outputs_are_refused(pixels, fn, match):
    model = tiny.build("vit-backbone")
    before = snapshot(model)
    with hfrel.attach(model) as explainer, pytest.raises(hfrel.LabelError, match=match):
        explainer.explain(pixels, target=fn)
    assert_same(before, snapshot(model))


# backbones ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_every_method_with_a_target(name, pixels):
    """float64: on mean-pooled backbones the class-specific part of a rollout is below float32's resolution."""
    model = tiny.build(name).double()
    pixels = pixels.double()
    model.train()
    before = snapshot(model)
    with hfrel.attach(model) as explainer:
        first = explainer.explain(pixels, method=hfrel.methods(), target=_similarity(_query(model, seed=5)))
        second = explainer.explain(pixels, method=hfrel.methods(), target=_similarity(_query(model, seed=6)))
    assert_same(before, snapshot(model))
    for method, exp in first.items():
        expected = (3, 32, 32) if method == "lrp" else (3, 4, 4)
        assert exp.relevance.shape == expected, method
        assert torch.isfinite(exp.relevance).all() and exp.relevance.abs().sum() > 0, method
        assert torch.equal(exp.labels, torch.zeros(3, dtype=torch.long))
        assert exp.logits.shape == (3, 1)
        assert exp.heatmap.shape == (3, 32, 32)
    for method in CLASS_SPECIFIC:
        difference = (first[method].relevance - second[method].relevance).abs().max()
        assert difference > 1e-12 * first[method].relevance.abs().max(), method


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_batch_and_several_targets_equal_each_alone(name, pixels):
    model = tiny.build(name)
    query = _query(model, rows=2)
    methods = ["transformer_attribution", "generic_attention", "lrp"]
    with hfrel.attach(model) as explainer:
        both = explainer.explain(pixels, method=methods, target=_similarity(query))
        for k in range(2):
            for i in range(len(pixels)):
                alone = explainer.explain(pixels[i : i + 1], method=methods, target=_similarity(query[k]))
                for method in methods:
                    assert both[method].relevance.shape[:2] == (3, 2)
                    _assert_parity(both[method].relevance[i, k], alone[method].relevance[0], 1e-4, method)


@pytest.mark.parametrize("name", ["vit-backbone", "clip-vision", "beit-backbone"])
def test_hidden_start_is_conserved_through_every_block(name):
    """From the hidden start (total 1 per target) the CVPR rules carry 1 through every block, in float64."""
    model = tiny.build(name).double()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    query = _query(model, rows=2).double()
    with hfrel.attach(model) as explainer, explainer._eval_mode():
        tape = explainer._recorder.new_tape(activations=True)
        scores = _similarity(query)(model(pixel_values=pixels))
        grads = torch.stack(
            [torch.autograd.grad(scores[:, k].sum(), tape.pooled_from, retain_graph=True)[0] for k in range(2)]
        )
        start = hidden_relevance(tape.pooled_from.detach(), grads, "cvpr")
        torch.testing.assert_close(start.sum(dim=(-2, -1)), torch.ones(2, 2, dtype=torch.float64))
        with torch.no_grad():
            relevance = propagate(
                explainer._resolved, tape, lambda rules: (start, None, None), "cvpr", down_to=0, to_pixels=False
            )
    for total in relevance.totals.values():
        torch.testing.assert_close(total, torch.ones(2, 2, dtype=torch.float64), rtol=1e-7, atol=1e-7)
