"""attach/explain/detach leave the user's model exactly as found: hooks, types, attention, mode, grads."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
import transformers

import hfrel
from hfrel._capture import LayerRecord
from tests import tiny
from tests.state import assert_same, snapshot


def _train_with_some_grads(model):
    """A model in train mode, one submodule in eval, some parameters with a .grad and some without."""
    model.train()
    model.classifier.eval()
    for i, param in enumerate(model.parameters()):
        if i % 2 == 0:
            param.grad = torch.full_like(param, 0.5)
    return model


def test_with_block_restores_everything(images):
    model = _train_with_some_grads(tiny.build("vit"))
    before = snapshot(model)
    with torch.no_grad():
        model.eval()
        reference = model(images).logits
    model.train()
    model.classifier.eval()
    with hfrel.attach(model) as explainer:
        assert model.config._attn_implementation == "hfrel_capture"
        explainer.explain(images, method=hfrel.methods())
        assert model.training  # explain restored the mode it found
    assert_same(before, snapshot(model))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images).logits, reference)


def test_detach_without_with_and_twice(vit, images):
    before = snapshot(vit)
    explainer = hfrel.attach(vit)
    explainer.explain(images)
    explainer.detach()
    explainer.detach()
    assert not explainer.attached
    assert_same(before, snapshot(vit))


def test_second_attach_is_refused(vit):
    with hfrel.attach(vit), pytest.raises(hfrel.AttachError, match="already has an hfrel explainer"):
        hfrel.attach(vit)
    with hfrel.attach(vit):  # after detach a new explainer is fine
        pass


def test_use_after_detach_is_refused(vit, images):
    explainer = hfrel.attach(vit)
    explainer.detach()
    with pytest.raises(hfrel.AttachError, match="detached"):
        explainer.explain(images)


def test_error_inside_with_block_still_detaches(vit, images):
    before = snapshot(vit)
    with pytest.raises(RuntimeError, match="boom"), hfrel.attach(vit) as explainer:
        explainer.explain(images)
        raise RuntimeError("boom")
    assert_same(before, snapshot(vit))


def test_error_during_explain_restores_mode_and_grads(images):
    model = _train_with_some_grads(tiny.build("vit"))
    with hfrel.attach(model) as explainer:
        before = snapshot(model)
        with pytest.raises(hfrel.LabelError):
            explainer.explain(images, label=99)  # found out after the forward pass
        with pytest.raises(hfrel.InputError):
            explainer.explain(images[:, :1])
        after = snapshot(model)
        assert_same(before, after)
        explainer.explain(images)  # still usable
    assert model.training


def test_error_while_attaching_leaves_nothing_behind(vit, monkeypatch):
    before = snapshot(vit)

    def fail(*args, **kwargs):
        raise RuntimeError("cannot switch attention")

    monkeypatch.setattr(transformers.PreTrainedModel, "set_attn_implementation", fail)
    with pytest.raises(RuntimeError, match="cannot switch attention"):
        hfrel.attach(vit)
    monkeypatch.undo()
    assert_same(before, snapshot(vit))
    with hfrel.attach(vit):  # and it was not left marked as attached
        pass


def test_explain_inside_no_grad_still_works(vit, images):
    with hfrel.attach(vit) as explainer, torch.no_grad():
        exp = explainer.explain(images)
    assert torch.isfinite(exp.relevance).all()


def test_plain_forward_while_attached_matches_eager(vit, images):
    eager = tiny.build("vit")
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        expected = eager(images).logits
        with hfrel.attach(vit):
            got = vit(images).logits
    torch.testing.assert_close(got, expected)


def test_explain_does_not_touch_parameter_grads(vit, images):
    for param in vit.parameters():
        param.requires_grad_(True)
    with hfrel.attach(vit) as explainer:
        explainer.explain(images, method=hfrel.methods())
    assert all(param.grad is None for param in vit.parameters())


def test_frozen_model_still_gets_gradient_methods(vit, images):
    for param in vit.parameters():
        param.requires_grad_(False)
    with hfrel.attach(vit) as explainer:
        exp = explainer.explain(images, method="transformer_attribution")
    assert exp.relevance.abs().sum() > 0
    assert all(not param.requires_grad for param in vit.parameters())


def test_a_released_record_keeps_only_its_attention_map():
    tensor, probs = torch.ones(1, 2, 3), torch.ones(1, 1, 2, 2)
    record = LayerRecord(x=tensor, attn_in=tensor, probs=probs, mlp_h=tensor, projections={"q": tensor})
    record.release()
    assert record.probs is probs
    assert record.projections == {}
    kept = [f.name for f in fields(record) if getattr(record, f.name) is not None and f.name != "projections"]
    assert kept == ["probs"]
