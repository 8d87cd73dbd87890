"""Checkpoints from folders: the model and processor come back ready, and every missing piece is an
InputError that says what to do. (The hub-without-network case runs the real CLI: test_cli_explain.)"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import hfrel
from hfrel._loading import load_classifier, resolve_device
from tests import tiny


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(hfrel.InputError, match=r"unknown device 'gpu0'; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(hfrel.InputError, match=r"device 'cuda' asked for, but .* no CUDA device"):
            resolve_device("cuda")
    else:
        with pytest.raises(hfrel.InputError, match=r"CUDA device\(s\)"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    if not torch.backends.mps.is_available():
        with pytest.raises(hfrel.InputError, match=r"no MPS device"):
            resolve_device("mps")


def test_a_saved_checkpoint_loads_with_its_processor(tmp_path):
    model = tiny.build("vit")
    model.save_pretrained(tmp_path)
    tf.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    loaded, processor = load_classifier(tmp_path, device="cpu")
    assert isinstance(loaded, tf.ViTForImageClassification) and not loaded.training
    assert processor.size.height == 32 and hasattr(processor, "image_mean")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0)


def test_missing_pieces_are_input_errors(tmp_path):
    with pytest.raises(hfrel.InputError, match=r"no model folder at ./no/such/folder"):
        load_classifier("./no/such/folder")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(hfrel.InputError, match=r"must be a folder or a hub id; .*weights.bin is a file"):
        load_classifier(tmp_path / "weights.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(hfrel.InputError, match=r"no model in the folder .*empty: it has no config.json"):
        load_classifier(empty)
    text = tmp_path / "text"
    tf.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(text)
    with pytest.raises(hfrel.InputError, match=r"the folder .*text holds no image-classification model"):
        load_classifier(text)
    bare = tmp_path / "bare"
    tiny.build("vit").save_pretrained(bare)
    with pytest.raises(hfrel.InputError, match=r"no image processor for the folder .*bare: save one next to the model"):
        load_classifier(bare)
