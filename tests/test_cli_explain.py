"""`hfrel explain` end to end on a tiny checkpoint saved with its image processor.

Two runs of the real console script (each costs an interpreter start): one over a folder of awkward
images, checked by content (maps equal explaining each image alone, pictures equal their maps, the
crop mapped back), and one hub id without network. Every other error path calls the same `main`
in-process, checking exit code, the one line on stderr, and that nothing was written.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel import viz
from hfrel._images import Problem, load_image
from hfrel.cli import main
from hfrel.pipeline import Settings
from hfrel.pipeline.records import summarise
from tests import tiny
from tests.offline import environment, hfrel_script
from tests.pictures import smooth_image

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "tabby cat", 1: "dog", 2: "Cat", 3: "cat", 4: "goldfish"}
METHODS = ["transformer_attribution", "rollout"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny DeiT whose processor resizes to 40x40 and center-crops 32x32, as DeiT's does at 256/224."""
    folder = tmp_path_factory.mktemp("checkpoint")
    model = tiny.build("deit")
    model.config.id2label = dict(NAMES)
    model.config.label2id = {name: index for index, name in NAMES.items()}
    model.save_pretrained(folder)
    tf.DeiTImageProcessorPil(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    folder = root / "photos"
    folder.mkdir()
    Image.fromarray(smooth_image(48, 64, 0)).save(folder / "rgb.jpg", quality=95)
    Image.fromarray(smooth_image(50, 50, 1)[..., 0]).save(folder / "gray.png")
    rgba = np.concatenate([smooth_image(40, 56, 2), np.full((40, 56, 1), 255, np.uint8)], axis=-1)
    rgba[:10, :, 3] = 0  # a transparent band
    Image.fromarray(rgba, "RGBA").save(folder / "clear.png")
    Image.fromarray(smooth_image(36, 36, 3)).quantize(16).save(folder / "palette.gif")
    Image.fromarray(smooth_image(44, 52, 4)[..., 1].astype(np.uint16) * 257).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 wide x 34 high; upright it is 34 wide x 60 high
    Image.fromarray(smooth_image(34, 60, 5)).save(folder / "turned.png", exif=exif)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    (root / "more").mkdir()
    Image.fromarray(smooth_image(40, 40, 6)).save(root / "more" / "rgb.png")  # same stem as photos/rgb.jpg
    return root


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [hfrel_script(), *args], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def run(checkpoint, photos):
    """The real console script over a folder with a broken file, a same-named file and a missing one."""
    out = photos / "out"
    args = ["photos", "more/rgb.png", "missing.png", "--model", str(checkpoint), "--label", "Tabby Cat"]
    args += ["--label", "3", "--method", METHODS[0], "--method", METHODS[1], "--top-k", "3", "--batch-size", "4"]
    args += ["--out", "out", "--original-size", "--progress", "always"]
    done = _console("explain", *args, cwd=photos)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    return done, out, summary


GOOD = ["clear.png", "deep.png", "gray.png", "palette.gif", "rgb.jpg", "turned.png"]


def test_the_run_prints_results_and_reports_skipped_files(run, photos):
    done, _, summary = run
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("hfrel:")]
    assert errors == [
        "hfrel: skipped: no such file or folder: missing.png",
        "hfrel: skipped: photos/broken.jpg is not an image file Pillow can read (unsupported format or not an image)",
    ]
    assert re.search(r"explaining: 100%\|.*\| 8/8", done.stderr)  # the progress bar, over files
    lines = done.stdout.splitlines()
    assert lines[-1] == f"explained 7 images, 2 skipped (listed in summary.json); results in out{os.sep}"
    for record in summary["images"]:
        if record["status"] != "ok":
            continue
        size = record["size"]
        header = f"{record['input']} ({size['width']}x{size['height']}) -> out{os.sep}{record['name']}"
        at = lines.index(header)
        for rank, p in enumerate(record["predictions"], start=1):
            name = re.escape(f"{p['label']} ({p['index']})")
            expected = rf"\s+{rank}\. {name}\s+logit\s+{p['logit']:.4f}\s+p {p['probability']:.4f}"
            assert re.fullmatch(expected, lines[at + rank]), lines[at + rank]
        assert lines[at + 4] == "  explained: tabby cat (0), cat (3); transformer_attribution, rollout"


def test_the_summary_lists_every_image_and_every_failure(run, checkpoint):
    _, out, summary = run
    assert summary["model"] == str(checkpoint) and summary["hfrel"] == hfrel.__version__
    assert summary["methods"] == METHODS and summary["start_layer"] == 0 and summary["top_k"] == 3
    assert summary["labels"] == [{"index": 0, "label": "tabby cat"}, {"index": 3, "label": "cat"}]
    assert summary["explained"] == 7
    assert summary["failed"] == [
        {"input": "missing.png", "error": "no such file or folder: missing.png"},
        {
            "input": "photos/broken.jpg",
            "error": "photos/broken.jpg is not an image file Pillow can read (unsupported format or not an image)",
        },
    ]
    inputs = [record["input"] for record in summary["images"]]
    assert inputs == ["photos/broken.jpg", *(f"photos/{name}" for name in GOOD), "more/rgb.png"]
    names = {record["input"]: record.get("name") for record in summary["images"]}
    assert names["photos/gray.png"] == "gray"
    assert re.fullmatch(r"rgb-[0-9a-f]{8}", names["photos/rgb.jpg"])
    assert re.fullmatch(r"rgb-[0-9a-f]{8}", names["more/rgb.png"]) and names["more/rgb.png"] != names["photos/rgb.jpg"]
    for record in summary["images"][1:]:
        assert [e["index"] for e in record["explained"]] == [0, 3]
        files = record["files"]
        listed = [files["panel"], files["maps"]]
        listed += [o[key] for o in files["overlays"] for key in ("file", "original")]
        assert len(files["overlays"]) == 4 and all((out / path).is_file() for path in listed)
        written = sorted(p.name for p in (out / record["name"]).iterdir())
        assert written == sorted([*(Path(p).name for p in listed), "record.json"])  # record.json: for reruns


def test_summary_is_rebuilt_from_per_image_records_in_any_order(run, checkpoint):
    _, _, summary = run
    records = list(summary["images"])
    random.Random(0).shuffle(records)
    settings = Settings(
        out=Path("out"),
        methods=tuple(METHODS),
        labels=(0, 3),
        class_names=NAMES,
        start_layer=0,
        top_k=3,
        cmap="jet",
        alpha=0.5,
        original_size=True,
    )
    problems = [Problem("missing.png", "no such file or folder: missing.png")]
    rebuilt = summarise(settings, summary["model"], records, problems)
    assert json.loads(json.dumps(rebuilt)) == summary


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model = tf.AutoModelForImageClassification.from_pretrained(checkpoint).eval()
    processor = tf.AutoImageProcessor.from_pretrained(checkpoint)
    return model, processor


def test_maps_equal_explaining_each_image_alone(run, photos, loaded):
    """The batched CLI run writes what `explain` gives each image alone, for both classes and methods."""
    _, out, summary = run
    model, processor = loaded
    with hfrel.attach(model) as explainer:
        for record in summary["images"][1:]:
            pixels = processor(images=[load_image(photos / record["input"])], return_tensors="pt")["pixel_values"]
            alone = explainer.explain(pixels, torch.tensor([[0, 3]]), method=METHODS)
            maps = np.load(out / record["files"]["maps"])
            np.testing.assert_array_equal(maps["labels"], [0, 3])
            np.testing.assert_allclose(maps["logits"], alone[METHODS[0]].logits[0].numpy(), atol=1e-5)
            for method in METHODS:
                np.testing.assert_allclose(maps[f"heatmap_{method}"], alone[method].heatmap[0].numpy(), atol=1e-5)
                np.testing.assert_allclose(maps[f"relevance_{method}"], alone[method].relevance[0].numpy(), rtol=1e-4)
            probabilities = alone[METHODS[0]].probabilities[0]
            top = probabilities.topk(3)
            assert [p["index"] for p in record["predictions"]] == top.indices.tolist()
            assert [p["label"] for p in record["predictions"]] == [NAMES[i] for i in top.indices.tolist()]
            np.testing.assert_allclose([p["probability"] for p in record["predictions"]], top.values, atol=1e-6)
            view = viz.model_view(pixels, processor)[0].permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(maps["image"], np.round(view * 255).astype(np.uint8))


def _crop_box(height: int, width: int) -> tuple[slice, slice]:
    """Photo pixels the 40x40 resize + 32x32 center crop keeps: centres landing in [4, 36) of 40."""

    def kept(count: int) -> np.ndarray:
        centres = (np.arange(count) + 0.5) * 40 / count
        return np.nonzero((centres >= 4) & (centres < 36))[0]

    rows, cols = kept(height), kept(width)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def test_pictures_show_their_maps_where_they_are(run, photos):
    _, out, summary = run
    for record in summary["images"][1:]:
        maps = np.load(out / record["files"]["maps"])
        photo = np.asarray(load_image(photos / record["input"]))
        assert photo.shape[:2] == (record["size"]["height"], record["size"]["width"])
        rows, cols = _crop_box(*photo.shape[:2])
        for entry in record["files"]["overlays"]:
            k = [0, 3].index(entry["label"])
            heat = maps[f"heatmap_{entry['method']}"][k]
            picture = np.asarray(Image.open(out / entry["file"]))
            assert picture.shape == (32, 32, 3)  # the image as the model saw it
            np.testing.assert_array_equal(picture, np.asarray(viz.overlay(maps["image"], heat)))
            redness = picture[..., 0].astype(float) - picture[..., 2]
            assert redness[heat > 0.75].mean() > redness[heat < 0.25].mean() + 100  # hot where the map is high

            original = maps[f"original_{entry['method']}"][k]
            assert original.shape == photo.shape[:2]
            inside = np.zeros(photo.shape[:2], dtype=bool)
            inside[rows, cols] = True
            np.testing.assert_array_equal(np.isnan(original), ~inside)  # no map outside the crop
            big = np.asarray(Image.open(out / entry["original"]))
            assert big.shape == photo.shape  # the photo at its own size
            np.testing.assert_array_equal(big[~inside], photo[~inside])  # cropped away: the photo itself
            np.testing.assert_array_equal(big, np.asarray(viz.overlay(photo, original)))
            hot = np.nanargmax(original)
            assert np.unravel_index(hot, original.shape)[0] in range(rows.start, rows.stop)
        panel = Image.open(out / record["files"]["panel"])
        assert panel.size == (round(100 * (5 * 2.6 + 6 * 0.08)), round(100 * (0.42 + 2.6 + 2 * 0.08)))


def test_upright_and_transparent_inputs(run, photos):
    _, out, summary = run
    records = {record["input"]: record for record in summary["images"]}
    assert records["photos/turned.png"]["size"] == {"width": 34, "height": 60}  # EXIF rotation applied
    assert records["photos/clear.png"]["model_input"] == {"width": 32, "height": 32}
    top_band = np.load(out / records["photos/clear.png"]["files"]["maps"])["image"][:2]
    assert (top_band == 255).all()  # the transparent band reached the model as white


def test_a_hub_id_without_network_is_bad_input(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "anything.png")
    done = _console("explain", "anything.png", "--model", "hfrel-tests/no-such-model", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(
        "hfrel: error: could not load the hub id 'hfrel-tests/no-such-model': it is not a local folder, and "
        "fetching it from the Hugging Face hub failed (no network, or no such repository). HF_HUB_OFFLINE is set"
    )
    assert not (tmp_path / "hfrel-out").exists()


# every other path, in-process ----------------------------------------------------------------------


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, checkpoint) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (root / "notes.txt").write_text("words")
    whole = root / "whole.png"
    Image.fromarray(smooth_image(40, 40, 7)).save(whole)
    (root / "cut.png").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (root / "empty").mkdir()
    (root / "a-file").write_text("x")
    bare = root / "bare"
    shutil.copytree(checkpoint, bare)
    (bare / "preprocessor_config.json").unlink()
    convnext = root / "convnext"
    tf.ConvNextForImageClassification(
        tf.ConvNextConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], num_labels=2, image_size=32)
    ).save_pretrained(convnext)
    tf.ConvNextImageProcessorPil(size={"shortest_edge": 32}).save_pretrained(convnext)
    return root


ERRORS = [
    (["missing.png"], {}, r"no such file or folder: missing.png"),
    (["broken.jpg"], {}, r"broken.jpg is not an image file Pillow can read \(unsupported format or not an image\)"),
    (["notes.txt"], {}, r"notes.txt is not an image file Pillow can read"),
    (["cut.png"], {}, r"cut.png is a corrupt or truncated image \(image file is truncated"),
    (["empty"], {}, r"no image files in the folder empty \(looked for .bmp, "),
    (["whole.png"], {"--model": "./nowhere"}, r"no model folder at ./nowhere"),
    (["whole.png"], {"--model": "bare"}, r"no image processor for the folder bare: save one next to the model"),
    (["whole.png"], {"--model": "convnext"}, r"(?i)convnext"),
    (
        ["whole.png"],
        {"--label": "7"},
        r"label 7 is out of range: the model has 5 classes, so labels must be in \[0, 4\]",
    ),
    (["whole.png"], {"--label": "tabby"}, r"unknown class name 'tabby'.* Close matches: 'tabby cat' \(0\)\."),
    (["whole.png"], {"--label": "CAT"}, r"class name 'CAT' is ambiguous: it names 'Cat' \(2\), 'cat' \(3\)"),
    (["whole.png"], {"--method": "magic"}, r"unknown method 'magic'; hfrel's methods are: transformer_attribution, "),
    (["whole.png"], {"--start-layer": "2"}, r"--start-layer must be an int in \[0, 1\] \(this model has 2 blocks\)"),
    (["whole.png"], {"--cmap": "virdis"}, r"unknown colormap 'virdis'.*Close matches: viridis"),
    (["whole.png"], {"--top-k": "0"}, r"--top-k must be at least 1; got 0"),
    (["whole.png"], {"--batch-size": "0"}, r"--batch-size must be at least 1; got 0"),
    (["whole.png"], {"--alpha": "1.5"}, r"--alpha must be in \[0, 1\]; got 1.5"),
    (["whole.png"], {"--out": "a-file"}, r"--out a-file is a file; give a folder"),
    (["whole.png"], {"--device": "cuda:99"}, r"device 'cuda:99' asked for"),
]


@pytest.mark.parametrize(("inputs", "options", "message"), ERRORS, ids=[m[:28] for _, _, m in ERRORS])
def test_bad_input_exits_2_with_one_line(capsys, monkeypatch, bad_inputs, checkpoint, inputs, options, message):
    monkeypatch.chdir(bad_inputs)
    options = {"--model": str(checkpoint), "--out": "out", **options}
    code, out, err = _main(capsys, "explain", *inputs, *(part for pair in options.items() for part in pair))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("hfrel: error: "), err
    assert re.search(message, err), err
    assert not (bad_inputs / "out").exists()  # nothing half-written


def test_usage_errors_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "x.png"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "hfrel explain: error: the following arguments are required: --model\n"


def test_when_every_input_fails_the_summary_still_says_why(capsys, monkeypatch, bad_inputs, checkpoint):
    monkeypatch.chdir(bad_inputs)
    code, out, err = _main(capsys, "explain", "broken.jpg", "cut.png", "--model", str(checkpoint), "--out", "all-bad")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "hfrel: skipped: broken.jpg is not an image file Pillow can read (unsupported format or not an image)",
        "hfrel: skipped: cut.png is a corrupt or truncated image (image file is truncated)",
        f"hfrel: error: none of the 2 inputs could be explained; see {Path('all-bad') / 'summary.json'}",
    ]
    summary = json.loads((bad_inputs / "all-bad" / "summary.json").read_text())
    assert summary["explained"] == 0 and [f["input"] for f in summary["failed"]] == ["broken.jpg", "cut.png"]
    assert sorted(p.name for p in (bad_inputs / "all-bad").iterdir()) == ["index.html", "index.json", "summary.json"]


def test_other_failures_exit_1_without_a_traceback(capsys, monkeypatch, bad_inputs, checkpoint):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(hfrel.pipeline.batches, "explain_batch", broken)
    monkeypatch.chdir(bad_inputs)
    code, _, err = _main(capsys, "explain", "whole.png", "--model", str(checkpoint), "--out", "out-1")
    assert code == 1
    assert err == "hfrel: failed: RuntimeError: disk on fire (set HFREL_DEBUG=1 for the traceback)\n"


def test_default_is_the_predicted_class(capsys, monkeypatch, bad_inputs, checkpoint, loaded):
    monkeypatch.chdir(bad_inputs)
    argv = ["explain", "whole.png", "--model", str(checkpoint), "--out", "predicted", "--top-k", "50"]
    code, out, err = _main(capsys, *argv, "--method", "lrp", "--cmap", "viridis", "--batch-size", "1")
    assert code == 0 and err == ""
    summary = json.loads((bad_inputs / "predicted" / "summary.json").read_text())
    record = summary["images"][0]
    assert summary["labels"] is None and summary["top_k"] == 5  # all 5 classes, not 50
    assert len(record["predictions"]) == 5
    assert record["explained"] == record["predictions"][:1]  # the arg-max class
    maps = np.load(bad_inputs / "predicted" / record["files"]["maps"])
    assert maps["relevance_lrp"].shape == (1, 32, 32) and maps["heatmap_lrp"].shape == (1, 32, 32)
    assert "original_lrp" not in maps.files
    assert [o["file"] for o in record["files"]["overlays"]] == [
        f"whole/lrp-{record['explained'][0]['index']}-{record['explained'][0]['label'].replace(' ', '-').lower()}.png"
    ]
    assert out.splitlines()[-1] == f"explained 1 image; results in predicted{os.sep}"


def test_methods_and_version(capsys):
    code, out, _ = _main(capsys, "methods")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == hfrel.methods()
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"hfrel {hfrel.__version__}\n"
