"""`hfrel evaluate` end to end: the console script on a tiny checkpoint and a dataset folder written here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hfrel.cli import main
from tests import tiny
from tests.offline import environment, hfrel_script
from tests.test_evaluation_data import add_item, gtsegs_content, write_gtsegs, write_labels

ROOT = Path(__file__).resolve().parents[1]
ISSUE_KEYS = {
    "pixel_accuracy",
    "miou",
    "map",
    "pointing_game",
    "positive_perturbation_auc",
    "negative_perturbation_auc",
}


@pytest.fixture
def checkpoint(tmp_path):
    from transformers import ViTImageProcessor

    model = tiny.build("vit")
    model.config.id2label = dict(enumerate(["circle", "square", "ring", "cross", "star"]))
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    add_item(root, "one", box=(2, 20, 4, 30))
    add_item(root, "two", box=(10, 38, 20, 46), seed=1, suffix=".jpg")
    add_item(root, "two_again", box=(0, 8, 0, 8), seed=1, suffix=".jpg")  # same picture, another object
    add_item(root, "nomask", mask=False)
    write_labels(root, ["one,square", "two.jpg,3", "two_again,star", "nomask,1"])
    return root


def hfrel_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([hfrel_script(), *args], capture_output=True, text=True, env=environment(), timeout=300)


def test_evaluate_writes_the_report(tmp_path, checkpoint, dataset):
    out = tmp_path / "out"
    done = hfrel_command(
        "evaluate",
        "--model",
        str(checkpoint),
        "--data",
        str(dataset),
        "--method",
        "transformer_attribution",
        "--method",
        "rollout",
        "--start-layer",
        "1",
        "--batch-size",
        "2",
        "--quiet",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "hfrel: skipped nomask: missing mask: no file masks/nomask.png" in done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 3 and report["start_layer"] == 1 and report["label"] == "dataset"
    assert report["model"] == str(checkpoint)
    assert list(report["methods"]) == ["transformer_attribution", "rollout"]
    for values in report["methods"].values():
        assert set(values) >= ISSUE_KEYS
        assert all(0 <= values[key] <= 100 for key in ISSUE_KEYS)
        assert values["positive_perturbation_auc"] <= 90 and values["negative_perturbation_auc"] <= 90
        assert len(values["negative_perturbation_accuracy"]) == 10
    assert report["skipped"] == [{"item": "nomask", "reason": "missing mask: no file masks/nomask.png"}]
    table = (out / "report.md").read_text()
    assert table in done.stdout and "| transformer_attribution |" in table and "| rollout |" in table
    assert (out / "perturbation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out / 'report.json'}" in done.stdout


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, checkpoint, dataset, capsys):
    def run(*args: str) -> str:
        assert main(["evaluate", "--model", str(checkpoint), "--quiet", *args]) == 2
        return capsys.readouterr().err

    out = ["--out", str(tmp_path / "out")]
    (dataset / "labels.csv").rename(tmp_path / "labels.csv")
    error = run("--data", str(dataset), *out)
    assert error.startswith("hfrel: error: no labels.csv in") and error.count("\n") == 1
    (tmp_path / "labels.csv").rename(dataset / "labels.csv")
    assert "unknown method 'cam'" in run("--data", str(dataset), "--method", "rollout", "--method", "cam", *out)
    assert "no dataset folder at" in run("--data", str(tmp_path / "missing"), *out)
    (tmp_path / "file").write_text("")
    assert "--out must be a folder" in run("--data", str(dataset), "--out", str(tmp_path / "file"))
    assert "n must be a positive integer" in run("--data", str(dataset), "--n", "0", *out)
    images, masks = gtsegs_content()
    write_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks)
    assert "--label predicted" in run("--data", str(tmp_path / "gtsegs_ijcv.mat"), *out)
    assert not (tmp_path / "out").exists()
