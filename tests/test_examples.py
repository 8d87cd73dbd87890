"""The example scripts run, offline, and write what they say they write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).parents[1]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_quickstart(tmp_path):
    done = _run("quickstart.py", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "transformer_attribution" in done.stdout
    with Image.open(tmp_path / "quickstart.png") as image:
        assert image.width > 200


def test_trainer_callback_example(tmp_path):
    done = _run("trainer_callback.py", "--out", str(tmp_path), "--steps", "4")
    assert done.returncode == 0, done.stderr
    panel = tmp_path / "hfrel" / "step-000004.png"
    assert f"wrote {panel}" in done.stdout
    with Image.open(panel) as image:
        assert image.height > image.width  # four rows of scenes


def test_train_swin_model_then_class_specificity(tmp_path):
    """The Swin training example saves a checkpoint that class_specificity.py explains with all methods."""
    done = _run("train_swin_model.py", "--out", str(tmp_path), "--steps", "2", "--batch", "8", "--held-out", "8")
    assert done.returncode == 0, done.stderr
    assert "held-out accuracy" in done.stdout and (tmp_path / "model.safetensors").exists()
    done = _run("class_specificity.py", "--model", str(tmp_path), "--scenes", "4", "--batch", "4")
    assert done.returncode == 0, done.stderr
    assert "| `transformer_attribution` |" in done.stdout and "| `lrp` |" in done.stdout


def test_the_class_specificity_table_in_the_docs_is_what_the_script_measures():
    """docs/results.md's table is this script's output (written with --docs), so it cannot drift."""
    done = _run("class_specificity.py", "--docs", str(ROOT / "docs" / "results.md"), "--check")
    assert done.returncode == 0, done.stderr + done.stdout


def test_train_zero_shot_model_example_writes_the_bundled_layout(tmp_path):
    """Two steps only: the script runs offline and writes a CLIP folder with the same tokenizer as the bundled one."""
    from hfrel.datasets import zero_shot_model_path

    out = tmp_path / "zero_shot"
    done = _run("train_zero_shot_model.py", "--out", str(out), "--steps", "2", "--batch", "8", "--held-out", "12")
    assert done.returncode == 0, done.stderr
    assert "zero-shot accuracy:" in done.stdout and f"saved to {out}" in done.stdout
    shipped = zero_shot_model_path()
    assert {p.name for p in out.iterdir()} == {p.name for p in shipped.iterdir()}
    assert (out / "tokenizer.json").read_text() == (shipped / "tokenizer.json").read_text()


def test_the_zero_shot_tables_in_the_docs_are_what_the_script_measures():
    """docs/results.md's zero-shot tables are examples/zero_shot_specificity.py's output, so they cannot drift."""
    done = _run("zero_shot_specificity.py", "--docs", str(ROOT / "docs" / "results.md"), "--check")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "zero-shot accuracy on 1000 held-out single-object scenes (seed 1): 100.0%" in done.stdout
