"""Bad input gets a typed error (a ValueError under hfrel.HfrelError) that says what was expected."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import hfrel
from hfrel._explanation import to_heatmap


@pytest.fixture
def explainer(vit):
    with hfrel.attach(vit) as explainer:
        yield explainer


def test_hierarchy():
    for error in (hfrel.UnsupportedModelError, hfrel.InputError, hfrel.LabelError, hfrel.MethodError):
        assert issubclass(error, hfrel.HfrelError)
        assert issubclass(error, ValueError)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (5, r"label 5 is out of range: the model has 5 classes, so labels must be in \[0, 4\]"),
        (-1, r"label -1 is out of range"),
        ([0, 1, 2, 7], r"label 7 is out of range"),
        (torch.tensor([[0, 9]] * 4), r"label 9 is out of range"),
        ([0, 1], r"got 2 labels for a batch of 4 images"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), r"integer class indices, got a tensor of dtype torch.float32"),
        ([0.5, 1, 2, 3], r"integer class indices or class names; got 0.5"),
        ("zebra", r"unknown class name 'zebra'"),
        (object(), r"label must be None, an int, a class name"),
    ],
)
def test_bad_labels(explainer, images, label, message):
    with pytest.raises(hfrel.LabelError, match=message):
        explainer.explain(images, label)


def test_label_names_resolve(explainer, images):
    exp = explainer.explain(images, "label_3")  # case-insensitive match of LABEL_3
    assert exp.labels.tolist() == [3, 3, 3, 3]


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (torch.randn(3, 32, 32), r"got one image of shape \(3, 32, 32\)\. Add the batch axis"),
        (torch.randn(2, 1, 3, 32, 32), r"must have shape \(B, C, H, W\)"),
        (torch.randn(2, 1, 32, 32), r"has 1 channels but the model expects 3"),
        (torch.randn(0, 3, 32, 32), r"no image"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), r"must be floating point"),
        (torch.randn(2, 3, 48, 48), r"trained on 32x32 images but got 48x48.*interpolate_pos_encoding=True"),
        (torch.randn(2, 3, 4, 4), r"smaller than one 8x8 patch"),
        ([[0.0]], r"must be a torch.Tensor"),
    ],
)
def test_bad_pixels(explainer, pixels, message):
    with pytest.raises(hfrel.InputError, match=message):
        explainer.explain(pixels)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels(explainer, images, bad):
    images[1, 0, 3, 3] = bad
    with pytest.raises(hfrel.InputError, match="1 NaN or infinite values"):
        explainer.explain(images)


def test_unknown_method_lists_known(explainer, images):
    with pytest.raises(
        hfrel.MethodError, match=r"unknown method 'gradcam'.*transformer_attribution, generic_attention"
    ):
        explainer.explain(images, method="gradcam")
    with pytest.raises(hfrel.MethodError, match="no method given"):
        explainer.explain(images, method=[])


@pytest.mark.parametrize("start_layer", [-1, 2, 1.0, True])
def test_start_layer_out_of_range(explainer, images, start_layer):
    with pytest.raises(hfrel.MethodError, match=r"start_layer must be an int in \[0, 1\] \(this model has 2 blocks\)"):
        explainer.explain(images, start_layer=start_layer)


def test_reserved_model_kwargs(explainer, images):
    with pytest.raises(hfrel.InputError, match="do not pass 'labels'"):
        explainer.explain(images, labels=torch.zeros(4, dtype=torch.long))


def test_gradient_methods_refuse_inference_mode_and_the_others_run(explainer, images):
    with torch.inference_mode():
        with pytest.raises(hfrel.HfrelError, match=r"need autograd; call explain\(\) outside torch.inference_mode"):
            explainer.explain(images, method="transformer_attribution")
        assert explainer.explain(images, method="rollout").relevance.shape[0] == len(images)


def test_unsupported_model_type_names_it_and_lists_supported():
    config = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    model = tf.ResNetForImageClassification(config)
    with pytest.raises(hfrel.UnsupportedModelError, match=r"model_type 'resnet'.*CNNs.*Supported: .*swin: .*vit: "):
        hfrel.attach(model)


def _pvt() -> torch.nn.Module:
    config = tf.PvtConfig(
        num_encoder_blocks=1,
        depths=[1],
        sequence_reduction_ratios=[1],
        hidden_sizes=[16],
        patch_sizes=[4],
        strides=[4],
        num_attention_heads=[1],
        mlp_ratios=[2],
        image_size=32,
        num_labels=3,
    )
    return tf.PvtForImageClassification(config)


def _hiera() -> torch.nn.Module:
    config = tf.HieraConfig(
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 1],
        image_size=[32, 32],
        patch_size=[3, 3],
        patch_stride=[2, 2],
        patch_padding=[1, 1],
        masked_unit_size=[2, 2],
        query_stride=[2, 2],
        num_query_pool=1,
    )
    return tf.HieraForImageClassification(config)


@pytest.mark.parametrize("build,name", [(_pvt, "PVT"), (_hiera, "Hiera")])
def test_other_hierarchical_families_are_refused_by_name(build, name):
    with pytest.raises(hfrel.UnsupportedModelError, match=rf"{name}.*not supported.*docs/models.md"):
        hfrel.attach(build())


def test_unsupported_class_of_a_known_family():
    config = tf.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, encoder_stride=16)
    model = tf.ViTForMaskedImageModeling(config)
    with pytest.raises(
        hfrel.UnsupportedModelError,
        match=r"cannot explain a ViTForMaskedImageModeling.*ViTForImageClassification, ViTModel",
    ):
        hfrel.attach(model)


def test_not_a_model():
    with pytest.raises(hfrel.UnsupportedModelError, match="got str"):
        hfrel.attach("google/vit-base-patch16-224")


def test_constant_map_gives_zero_heatmap_not_nan():
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.arange(16.0).reshape(4, 4)])
    heat = to_heatmap(maps, (32, 32))
    assert torch.isfinite(heat).all()
    assert heat[0].eq(0).all() and heat[1].eq(0).all()
    assert heat[2].min() == 0 and heat[2].max() == 1


def test_zero_relevance_model_gives_zero_heatmap(vit, images):
    with torch.no_grad():
        vit.classifier.weight.zero_()  # no evidence for any class: all relevance is zero
    with hfrel.attach(vit) as explainer:
        exp = explainer.explain(images, method="transformer_attribution")
    assert exp.relevance.eq(0).all()
    assert exp.heatmap.eq(0).all()
