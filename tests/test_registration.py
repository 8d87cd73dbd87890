"""A plain ViT variant hfrel does not ship, described through the public registration call (docs/models.md)."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import hfrel
from hfrel.models import registered_families
from tests import tiny
from tests.state import assert_same, snapshot


class JepaVariantConfig(tf.IJepaConfig):
    """A user's own model type, built on I-JEPA's modules; hfrel ships no spec for it."""

    model_type = "jepa-variant"


class JepaVariantForImageClassification(tf.IJepaForImageClassification):
    config_class = JepaVariantConfig


def _variant():
    torch.manual_seed(0)
    config = JepaVariantConfig(**tiny.COMMON)  # evaluated in eval mode, so the dropout settings do not matter
    model = JepaVariantForImageClassification(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.3)
    return model


@pytest.fixture
def variant_spec():
    spec = hfrel.FamilySpec(
        name="jepa-variant",
        model_types=("jepa-variant",),
        classes=("JepaVariantForImageClassification",),
        embeddings="ijepa.embeddings",
        final_norm="ijepa.layernorm",
        pooling="mean",  # the head reads the mean of all tokens
        prefix_tokens=0,  # no CLS token
    )
    hfrel.register_family(spec)
    yield spec
    hfrel.models._spec._REGISTRY.remove(spec)


def test_unregistered_variant_is_refused():
    with pytest.raises(hfrel.UnsupportedModelError, match=r"model_type 'jepa-variant'.*register_family"):
        hfrel.attach(_variant())


def test_registered_variant_explains(variant_spec):
    assert registered_families()[0] is variant_spec
    assert hfrel.supported_models()["jepa-variant"] == ["JepaVariantForImageClassification"]
    model = _variant()
    before = snapshot(model)
    pixels = torch.randn(2, 3, 32, 32)
    with hfrel.attach(model) as explainer:
        results = explainer.explain(pixels, 0, method=hfrel.methods())
        other = explainer.explain(pixels, 3, method="transformer_attribution")
    for method, exp in results.items():
        assert exp.relevance.shape == ((2, 32, 32) if method == "lrp" else (2, 4, 4)), method
        assert torch.isfinite(exp.relevance).all(), method
    assert not torch.allclose(other.relevance, results["transformer_attribution"].relevance)
    assert_same(before, snapshot(model))


def test_spec_checks_its_own_consistency():
    with pytest.raises(hfrel.FamilySpecError, match="pooling must be one of"):
        hfrel.FamilySpec(name="x", model_types=("x",), classes=("X",), embeddings="e", pooling="max")
    with pytest.raises(hfrel.FamilySpecError, match="needs two heads"):
        hfrel.FamilySpec(name="x", model_types=("x",), classes=("X",), embeddings="e", pooling="cls+dist")
    with pytest.raises(hfrel.FamilySpecError, match=r"expects a hfrel\.FamilySpec"):
        hfrel.register_family({"name": "x"})


def test_a_spec_that_does_not_match_the_model_says_what_is_missing():
    spec = hfrel.FamilySpec(
        name="broken",
        model_types=("vit",),
        classes=("ViTForImageClassification",),
        embeddings="vit.embeddings",
        query="attention.wrong_name",
    )
    from tests import tiny

    with pytest.raises(hfrel.UnsupportedModelError, match=r"attention\.wrong_name"):
        hfrel.attach(tiny.build("vit"), family=spec)
