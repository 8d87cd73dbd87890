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


def test_the_class_specificity_table_in_the_docs_is_what_the_script_measures():
    """docs/results.md's table is this script's output (written with --docs), so it cannot drift."""
    done = _run("class_specificity.py", "--docs", str(ROOT / "docs" / "results.md"), "--check")
    assert done.returncode == 0, done.stderr + done.stdout
