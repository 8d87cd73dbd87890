"""A Swin checkpoint through hfrel's entry points, unchanged: `hfrel explain`, `hfrel evaluate` and the
Trainer callback, each on a tiny Swin saved to disk (or trained here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

from hfrel.cli import main
from hfrel.integrations import ExplainCallback
from tests import tiny
from tests.test_evaluation_data import add_item, write_labels


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny.build("swin")
    model.config.id2label = dict(enumerate(["circle", "square", "ring", "cross", "star"]))
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    folder = tmp_path_factory.mktemp("swin") / "model"
    model.save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_hfrel_explain_with_a_swin_checkpoint(tmp_path, checkpoint, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (40, 30)), ("b.png", (32, 32))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(photos / name)
    out = tmp_path / "out"
    args = ["explain", str(photos), "--model", str(checkpoint), "--label", "star"]
    args += ["--method", "transformer_attribution", "--method", "rollout", "--out", str(out), "--progress", "never"]
    code = main(args)
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["images"]) == 2
    maps = list(out.rglob("*.npz"))
    assert maps
    with np.load(maps[0]) as data:
        arrays = [data[key] for key in data.files]
    assert any(a.shape[-2:] == (16, 16) for a in arrays)  # the first stage's patch grid (32 px / patch 2)
    assert all(np.isfinite(a).all() for a in arrays)


def test_hfrel_evaluate_with_a_swin_checkpoint(tmp_path, checkpoint, capsys):
    root = tmp_path / "data"
    add_item(root, "one", box=(2, 20, 4, 30))
    add_item(root, "two", box=(10, 38, 20, 46), seed=1, suffix=".jpg")
    write_labels(root, ["one,square", "two.jpg,3"])
    out = tmp_path / "out"
    args = ["evaluate", "--model", str(checkpoint), "--data", str(root)]
    args += ["--method", "transformer_attribution", "--method", "rollout", "--quiet", "--out", str(out)]
    code = main(args)
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 2 and list(report["methods"]) == ["transformer_attribution", "rollout"]
    for values in report["methods"].values():
        assert 0 <= values["pointing_game"] <= 100


def test_trainer_callback_with_a_swin(tmp_path):
    torch.manual_seed(0)
    model = tf.SwinForImageClassification(tf.SwinConfig(**tiny.SWIN_COMMON))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    callback = ExplainCallback(pixels, every_n_steps=2)
    args = tf.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    tf.Trainer(model=model, args=args, train_dataset=tiny.RandomImages(8), callbacks=[callback]).train()
    assert [p.name for p in callback.written] == ["step-000002.png"]
    assert model.training and all(p.grad is None for p in model.parameters())
