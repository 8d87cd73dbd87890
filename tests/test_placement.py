"""Models placed by accelerate (dispatched, offloaded to CPU or disk) explain exactly like the plain model."""

from __future__ import annotations

import pytest
import torch
from accelerate import cpu_offload, disk_offload, dispatch_model

import hfrel
from tests import tiny
from tests.state import assert_same, snapshot

METHODS = hfrel.methods()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def expected(pixels):
    with hfrel.attach(tiny.build("vit")) as explainer:
        return explainer.explain(pixels, [0, 1, 2], method=METHODS)


def _check(model, pixels, expected):
    before = snapshot(model)
    with hfrel.attach(model) as explainer:
        got = explainer.explain(pixels, [0, 1, 2], method=METHODS)
    for method in METHODS:
        torch.testing.assert_close(got[method].relevance, expected[method].relevance, rtol=1e-5, atol=1e-7)
    assert_same(before, snapshot(model))


def test_cpu_offload(pixels, expected):
    model = tiny.build("vit")
    cpu_offload(model, execution_device="cpu")
    assert model.vit.layers[0].attention.q_proj.weight.device.type == "meta"
    _check(model, pixels, expected)


def test_disk_offload(pixels, expected, tmp_path):
    model = tiny.build("vit")
    disk_offload(model, offload_dir=tmp_path, execution_device="cpu")
    _check(model, pixels, expected)


def test_dispatch_with_a_device_map_mixing_resident_and_offloaded_blocks(pixels, expected, tmp_path):
    model = tiny.build("vit")
    device_map = {
        "vit.embeddings": "cpu",
        "vit.layers.0": "cpu",
        "vit.layers.1": "disk",
        "vit.layernorm": "cpu",
        "classifier": "disk",
    }
    dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path), main_device="cpu")
    assert model.vit.layers[1].mlp.fc1.weight.device.type == "meta"
    assert model.vit.layers[0].mlp.fc1.weight.device.type == "cpu"
    _check(model, pixels, expected)


def test_from_pretrained_with_device_map_and_offload(pixels, expected, tmp_path):
    tiny.build("vit").save_pretrained(tmp_path / "model")
    from transformers import ViTForImageClassification

    device_map = {"vit.embeddings": "cpu", "vit.layers": "disk", "vit.layernorm": "cpu", "classifier": "cpu"}
    model = ViTForImageClassification.from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=tmp_path / "offload"
    )
    _check(model, pixels, expected)
