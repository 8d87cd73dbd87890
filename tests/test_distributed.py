"""Many images, many processes: `hfrel explain` under a launcher, reruns, and `hfrel.explain_images`.

Launching costs an interpreter start per process, so the launched runs are few: the console script
on 2 processes (compared with a one-process run of the same command, in-process), its rerun, and the
dataset example. `accelerate launch --cpu --num_processes 2` would start ONE process here (accelerate's
multi-CPU launcher needs MPI); `--multi_gpu` uses torchrun's launcher, which gives 2 CPU processes
over gloo when the run asks for the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel import viz
from hfrel.cli import main
from hfrel.pipeline import fingerprint, processes
from tests import tiny
from tests.offline import environment
from tests.pictures import smooth_image

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "cat", 1: "dog", 2: "fish", 3: "bird", 4: "horse"}
LAUNCH = ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
LAUNCH += ["--mixed_precision", "no", "--dynamo_backend", "no"]
GOOD = [f"photo{i}" for i in range(6)]


def _launch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate")
    assert accelerate, "accelerate's launcher is not installed"
    command = [accelerate, *LAUNCH, "--main_process_port", str(_free_port()), *args]
    return subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600)


def _free_port() -> int:
    """A port no one listens on, so launches of other test runs on this machine cannot collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny ViT saved with its image processor, and a folder of 6 images and one unreadable file."""
    root = tmp_path_factory.mktemp("distributed")
    model = tiny.build("vit")
    model.config.id2label = dict(NAMES)
    model.config.label2id = {name: index for index, name in NAMES.items()}
    model.save_pretrained(root / "checkpoint")
    tf.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / "checkpoint")
    photos = root / "photos"
    photos.mkdir()
    for i, name in enumerate(GOOD):
        Image.fromarray(smooth_image(36 + 2 * i, 44 - i, i)).save(photos / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"not an image")
    return root


def _arguments(out: str) -> list[str]:
    return ["explain", "photos", "--model", "checkpoint", "--out", out, "--device", "cpu", "--label", "1"]


OPTIONS = ["--method", "transformer_attribution", "--method", "rollout", "--batch-size", "2", "--top-k", "3"]


@pytest.fixture(scope="module")
def two(workspace):
    """The console script on 2 launched processes."""
    done = _launch("--no_python", "hfrel", *_arguments("two"), *OPTIONS, cwd=workspace)
    return done, workspace / "two"


@pytest.fixture(scope="module")
def one(workspace):
    """The same command in one process (in-process: the same `main` the console script calls)."""
    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        assert main([*_arguments("one"), *OPTIONS]) == 0
    finally:
        os.chdir(cwd)
    return workspace / "one"


def _files(folder: Path) -> dict[str, int]:
    """Every file under the folder, relative path -> modification time (ns)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_close(a, b, path: str = "") -> None:
    """JSON values equal, floats within 1e-5 (the processes' batches differ, so the last bits may)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_two_processes_write_what_one_process_writes(two, one):
    done, out = two
    assert done.returncode == 0, done.stderr
    assert set(_files(out)) == set(_files(one))
    assert {"summary.json", "index.json", "index.html"} <= set(_files(out))
    assert (out / "index.html").read_text() == (one / "index.html").read_text()  # the same page
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == GOOD
    summary = json.loads((out / "summary.json").read_text())
    _assert_close(summary, json.loads((one / "summary.json").read_text()))
    assert summary["explained"] == 6 and [f["input"] for f in summary["failed"]] == ["photos/broken.jpg"]
    for name in GOOD:
        _assert_close(
            json.loads((out / name / "record.json").read_text()), json.loads((one / name / "record.json").read_text())
        )
        two_maps, one_maps = np.load(out / name / "maps.npz"), np.load(one / name / "maps.npz")
        assert two_maps.files == one_maps.files
        for key in one_maps.files:
            np.testing.assert_allclose(two_maps[key], one_maps[key], rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")
        for method in ("transformer_attribution", "rollout"):  # each overlay is its own run's map, drawn
            drawn = viz.overlay(two_maps["image"], two_maps[f"heatmap_{method}"][0])
            np.testing.assert_array_equal(np.asarray(Image.open(out / name / f"{method}-1-dog.png")), drawn)
        for png in (one / name).glob("*.png"):
            a = np.asarray(Image.open(png)).astype(int)
            b = np.asarray(Image.open(out / name / png.name)).astype(int)
            # maps within 1e-5 can still cross a colormap step or a rounding edge at a few pixels
            assert a.shape == b.shape and np.mean(a != b) < 0.01, png.name


def test_both_processes_did_work_and_the_index_says_which(two):
    done, out = two
    index = json.loads((out / "index.json").read_text())
    assert index["processes"] == 2 and index["computed"] == 6 and index["reused"] == 0 and index["failed"] == 1
    inputs = ["photos/broken.jpg", *(f"photos/{name}.png" for name in GOOD)]
    shards = index["shards"]
    assert [s["process"] for s in shards] == [0, 1]
    for rank, shard in enumerate(shards):
        mine = inputs[rank::2]
        assert shard["computed"] == [i for i in mine if i != "photos/broken.jpg"] and shard["reused"] == []
        assert shard["failed"] == [i for i in mine if i == "photos/broken.jpg"]
    # every image's lines printed once, whole (processes write a block at a time); one closing line
    lines = done.stdout.splitlines()
    for name in GOOD:
        at = [i for i, line in enumerate(lines) if line.startswith(f"photos/{name}.png (")]
        assert len(at) == 1
        assert [line[:5] for line in lines[at[0] + 1 : at[0] + 4]] == ["   1.", "   2.", "   3."]
        assert lines[at[0] + 4] == "  explained: dog (1); transformer_attribution, rollout"
    assert lines[-1] == f"explained 6 images on 2 processes, 1 skipped (listed in summary.json); results in two{os.sep}"
    assert sum(line.startswith("explained ") for line in lines) == 1
    skipped = [line for line in done.stderr.splitlines() if line.startswith("hfrel:")]
    assert skipped == [
        "hfrel: skipped: photos/broken.jpg is not an image file Pillow can read (unsupported format or not an image)"
    ]


def test_a_rerun_reuses_every_image_the_processes_wrote(two, workspace, capsys):
    """One process honours the records two processes left: nothing is recomputed or rewritten."""
    _, out = two
    before = _files(out)
    summary = (out / "summary.json").read_text()
    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        assert main([*_arguments("two"), *OPTIONS]) == 0
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().out.splitlines() == [
        f"explained 6 images (6 reused from an earlier run), 1 skipped (listed in summary.json); results in two{os.sep}"
    ]
    after = _files(out)
    kept = {path: mtime for path, mtime in before.items() if path not in ("summary.json", "index.json")}
    assert {path: after[path] for path in kept} == kept  # no image file rewritten
    assert (out / "summary.json").read_text() == summary
    index = json.loads((out / "index.json").read_text())
    assert index["processes"] == 1 and index["reused"] == 6 and index["computed"] == 0


def test_changed_input_or_settings_redo_exactly_what_they_touch(one, workspace, capsys):
    """In one process: a touched input is explained again, the rest reused; a new setting redoes all."""
    folder = workspace / "rerun"
    shutil.copytree(one, folder)
    os.utime(workspace / "photos" / "photo2.png", ns=(1_000_000_000, 1_000_000_000))
    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        before = _files(folder)
        assert main([*_arguments("rerun"), *OPTIONS]) == 0
        after = _files(folder)
        out = capsys.readouterr().out.splitlines()
        assert out[-1] == (
            "explained 6 images (5 reused from an earlier run), 1 skipped (listed in summary.json); "
            f"results in rerun{os.sep}"
        )
        assert [line for line in out if line.startswith("photos/")] == ["photos/photo2.png (42x40) -> rerun/photo2"]
        changed = sorted({path.split("/")[0] for path in before if after[path] != before[path]})
        assert changed == ["index.json", "photo2", "summary.json"]
        _assert_close(json.loads((folder / "summary.json").read_text()), json.loads((one / "summary.json").read_text()))

        assert main([*_arguments("rerun"), *OPTIONS, "--alpha", "0.4"]) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("explained 6 images, 1 skipped")
        assert json.loads((folder / "index.json").read_text())["computed"] == 6
    finally:
        os.chdir(cwd)


def test_the_example_runs_alone_then_launched_reusing_what_is_done(tmp_path):
    """The example as a plain script, then launched on 2 processes after two examples' records are
    removed: each process explains its missing one and reuses the rest."""
    script = ROOT / "examples" / "explain_dataset_accelerate.py"
    alone = subprocess.run(
        [sys.executable, str(script), "--out", "out", "--examples", "6"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert alone.returncode == 0, alone.stderr
    assert f"explained 6 images; results in out{os.sep}" in alone.stdout.splitlines()
    summary = (tmp_path / "out" / "summary.json").read_text()
    images = json.loads(summary)["images"]
    assert [image["name"] for image in images] == [f"example-{i:06d}" for i in range(6)]
    assert [image["explained"][0]["index"] for image in images] == [0, 1, 2, 0, 1, 2]  # the label column's class
    for name in ("example-000004", "example-000005"):
        (tmp_path / "out" / name / "record.json").unlink()

    launched = _launch(str(script), "--out", "out", "--examples", "6", cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    assert f"explained 6 images on 2 processes (4 reused from an earlier run); results in out{os.sep}" in (
        launched.stdout.splitlines()
    )
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [(shard["computed"], shard["reused"]) for shard in index["shards"]] == [
        (["example 4"], ["example 0", "example 2"]),
        (["example 5"], ["example 1", "example 3"]),
    ]
    _assert_close(json.loads((tmp_path / "out" / "summary.json").read_text()), json.loads(summary))


# the Python API on examples, in one process ---------------------------------------------------------


@pytest.fixture(scope="module")
def classifier():
    model = tiny.build("deit")
    model.config.id2label = dict(NAMES)
    processor = tf.ViTImageProcessorPil(size={"height": 32, "width": 32})
    return model, processor


def _rows(count: int = 5) -> list[dict]:
    return [{"image": Image.fromarray(smooth_image(30 + i, 40, 10 + i)), "label": (i + 1) % 5} for i in range(count)]


def test_examples_explain_their_predicted_class_unless_a_label_column_is_named(classifier, tmp_path):
    model, processor = classifier
    rows = _rows()
    rows[3] = {"image": None, "label": 0}
    predicted = hfrel.explain_images(model, processor, rows, tmp_path / "predicted", batch_size=2, progress="never")
    assert predicted["explained"] == 4 and predicted["labels"] is None
    assert predicted["failed"] == [
        {
            "input": "example 3",
            "error": "example 3's 'image' is a NoneType; expected a PIL image, an image path, a uint8 (H, W[, 3|4]) "
            "array, or a `datasets` image cell",
        }
    ]
    ok = [image for image in predicted["images"] if image["status"] == "ok"]
    assert [image["name"] for image in ok] == ["example-000000", "example-000001", "example-000002", "example-000004"]
    assert all(image["explained"] == image["predictions"][:1] for image in ok)

    labelled = hfrel.explain_images(
        model, processor, rows, tmp_path / "labelled", label_column="label", method="rollout", progress="never"
    )
    assert labelled["label_column"] == "label"
    assert [f["input"] for f in labelled["failed"]] == ["example 3"]

    whole = tmp_path / "whole.png"
    rows[0]["image"].save(whole)
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    lazy = Image.open(tmp_path / "cut.png")  # as `datasets` hands images over: decoded on first use
    named = [{"image": rows[0]["image"], "label": "Fish"}, {"image": rows[1]["image"], "label": 9}]
    named.append({"image": lazy, "label": 0})
    summary = hfrel.explain_images(model, processor, named, tmp_path / "named", label_column="label", progress="never")
    assert summary["images"][0]["explained"][0]["index"] == 2  # a class name, case-insensitive
    assert summary["failed"][0] == {
        "input": "example 1",
        "error": "example 1's 'label' is 9, but the model has 5 classes [0, 4]: the column must hold the model's "
        "class indices or class names",
    }
    assert summary["failed"][1]["error"].startswith("example 2's 'image' is an image Pillow cannot decode (OSError")
    with hfrel.attach(model) as explainer:
        for image in (image for image in labelled["images"] if image["status"] == "ok"):
            row = rows[image["position"]]
            assert [e["index"] for e in image["explained"]] == [row["label"]]
            pixels = processor(images=[row["image"]], return_tensors="pt")["pixel_values"]
            alone = explainer.explain(pixels, row["label"], method="rollout")
            maps = np.load(tmp_path / "labelled" / image["files"]["maps"])
            np.testing.assert_allclose(maps["heatmap_rollout"][0], alone.heatmap[0].numpy(), atol=1e-5)
            assert maps["labels"].tolist() == [row["label"]]


def test_examples_are_reused_by_their_pixels(classifier, tmp_path):
    model, processor = classifier
    rows = _rows(3)
    hfrel.explain_images(model, processor, rows, tmp_path, label=["dog", 4], progress="never")
    before = _files(tmp_path)
    rows[1] = {"image": Image.fromarray(smooth_image(31, 40, 99)), "label": 2}  # same index, other pixels
    summary = hfrel.explain_images(model, processor, rows, tmp_path, label=["dog", 4], progress="never")
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["shards"][0]["computed"] == ["example 1"]
    assert index["shards"][0]["reused"] == ["example 0", "example 2"]
    after = _files(tmp_path)
    assert sorted({p.split("/")[0] for p in before if after[p] != before[p]}) == [
        "example-000001",
        "index.html",  # example 1's new predictions are on the page
        "index.json",
        "summary.json",
    ]
    assert summary["labels"] == [{"index": 1, "label": "dog"}, {"index": 4, "label": "horse"}]

    torch.manual_seed(1)
    changed = tiny.build("deit", seed=1)  # other weights: nothing is reused
    changed.config.id2label = dict(NAMES)
    hfrel.explain_images(changed, processor, rows, tmp_path, label=["dog", 4], progress="never")
    assert json.loads((tmp_path / "index.json").read_text())["reused"] == 0


def test_files_through_the_api_match_the_command(classifier, one, workspace):
    """The API on paths writes the command's summary (model text aside) with the command's settings."""
    model = tf.AutoModelForImageClassification.from_pretrained(workspace / "checkpoint").eval()
    processor = tf.AutoImageProcessor.from_pretrained(workspace / "checkpoint")
    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        summary = hfrel.explain_images(
            model,
            processor,
            "photos",
            "api",
            label=1,
            method=["transformer_attribution", "rollout"],
            top_k=3,
            model_name="checkpoint",
            progress="never",
        )
    finally:
        os.chdir(cwd)
    _assert_close(summary, json.loads((one / "summary.json").read_text()))
    assert set(_files(workspace / "api")) == set(_files(one))


API_ERRORS = [
    ({"images": {"train": [], "test": []}}, hfrel.InputError, r"pass one split of a DatasetDict"),
    ({"images": (x for x in [])}, hfrel.InputError, r"a streaming dataset cannot be split"),
    ({"images": []}, hfrel.InputError, r"no image to explain: images is empty"),
    (
        {"images": [{"picture": 1}]},
        hfrel.InputError,
        r"the examples have no column 'image'; their columns are 'picture'",
    ),
    ({"label_column": "class"}, hfrel.InputError, r"no column 'class'"),
    ({"images": ["a.png", 3]}, hfrel.InputError, r"all paths or all dict examples; got a int"),
    ({"images": "missing.png"}, hfrel.InputError, r"no such file or folder: missing.png"),
    ({"images": "missing.png", "label_column": "label"}, hfrel.InputError, r"label_column applies to dataset examples"),
    ({"label": 1, "label_column": "label"}, hfrel.LabelError, r"label .* or label_column .*, not both"),
    ({"label": "zebra"}, hfrel.LabelError, r"unknown class name 'zebra'"),
    ({"label": []}, hfrel.LabelError, r"label is empty"),
    ({"method": "magic"}, hfrel.MethodError, r"unknown method 'magic'"),
    ({"top_k": 0}, hfrel.InputError, r"top_k must be at least 1; got 0"),
    ({"start_layer": 2}, hfrel.MethodError, r"start_layer must be an int in \[0, 1\] \(this model has 2 blocks\)"),
    ({"progress": "sometimes"}, hfrel.InputError, r"progress must be 'auto', 'always' or 'never'"),
]


@pytest.mark.parametrize(("options", "error", "message"), API_ERRORS, ids=[m[:30] for _, _, m in API_ERRORS])
def test_api_refuses_bad_input_before_writing(classifier, tmp_path, options, error, message):
    model, processor = classifier
    options = {"images": _rows(2), "progress": "never", **options}
    with pytest.raises(error, match=message):
        hfrel.explain_images(model, processor, out=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_the_weights_digest_reads_offloaded_weights_and_sees_every_change():
    from accelerate import cpu_offload

    model = tiny.build("vit")
    digest = fingerprint.weights_digest(model)
    offloaded = tiny.build("vit")
    cpu_offload(offloaded, execution_device="cpu")
    assert offloaded.vit.layers[0].attention.q_proj.weight.device.type == "meta"
    assert fingerprint.weights_digest(offloaded) == digest
    with torch.no_grad():
        model.vit.layers[1].mlp.fc2.bias[3] += 1e-6
    assert fingerprint.weights_digest(model) != digest


def test_processes_are_those_the_launcher_started(monkeypatch):
    for variable in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(variable, raising=False)
    assert processes.launched_world() is None and processes.launched_rank() == 0
    assert processes.join_processes(cpu=True) == (processes.Processes(), None)  # no accelerate state made
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert processes.launched_world() == 4 and processes.launched_rank() == 3
    monkeypatch.setattr("accelerate.PartialState", lambda cpu: SimpleNamespace(num_processes=1, process_index=0))
    with pytest.raises(hfrel.HfrelError, match=r"the launcher started 4 processes but accelerate's state counts 1"):
        processes.join_processes(cpu=True)  # each process would explain everything: refused


def test_when_one_process_fails_every_process_ends_with_the_same_error(workspace):
    """Process 1 fails while explaining: neither process waits forever in the gather; both end, soon,
    with exit code 1, and the main process says which process failed and why."""
    script = ROOT / "tests" / "scripts" / "failing_process.py"
    accelerate = shutil.which("accelerate")
    command = [accelerate, *LAUNCH, "--main_process_port", str(_free_port()), str(script), *_arguments("failing")]
    launched = subprocess.Popen(
        command,
        cwd=workspace,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = launched.communicate(timeout=240)  # a run's start takes most of this; a hang takes 30 minutes
    except subprocess.TimeoutExpired:
        os.killpg(launched.pid, 9)
        launched.communicate()
        pytest.fail("the processes hung after one of them failed")
    codes = [(workspace / f"failing.rank{rank}.code").read_text() for rank in (0, 1)]
    assert codes == ["1", "1"], stderr
    errors = [line for line in stderr.splitlines() if line.startswith("hfrel: error:")]
    assert errors == ["hfrel: error: process 1 of 2 failed: RuntimeError: disk on fire on process 1"], stderr
    assert not (workspace / "failing" / "summary.json").exists()  # a failed run writes no summary
