"""`hfrel demo`: runs offline end to end through the real console script and writes its panels."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from hfrel.cli import main
from tests.offline import environment, hfrel_script


def _demo_command(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """`hfrel demo ARGS` through the real console script, offline, plotting off-screen."""
    env = environment(TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    return subprocess.run([hfrel_script(), "demo", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _assert_panel(path: Path, columns: int) -> None:
    """A real picture: wide enough for `columns` images, colourful (heatmaps), not blank."""
    with Image.open(path) as opened:
        image = np.asarray(opened.convert("RGB"))
    height, width, _ = image.shape
    assert width >= columns * 200 and 200 <= height < width, image.shape
    assert image.std() > 20
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500  # overlays, not a flat figure


def test_demo_console_script_runs_offline_and_writes_panels(tmp_path):
    out = tmp_path / "demo"
    done = _demo_command("--out", str(out), "--scenes", "2", timeout=300)
    assert done.returncode == 0, done.stderr
    panels = sorted(out.iterdir())
    assert [p.name for p in panels] == ["scene_0.png", "scene_1.png"]
    for path in panels:
        _assert_panel(path, columns=1 + 3 * 2)  # input, then 3 methods x 2 classes
        assert str(path) in done.stdout  # it says where the files are
    assert "top classes:" in done.stdout
    assert "transformer_attribution" in done.stdout and "class-agnostic" in done.stdout


def test_demo_with_chosen_methods(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--scenes", "1", "--method", "generic_attention", "lrp"]) == 0
    printed = capsys.readouterr().out
    assert "generic_attention" in printed and "lrp" in printed and "rollout" not in printed
    _assert_panel(tmp_path / "scene_0.png", columns=1 + 2 * 2)


def test_demo_rejects_bad_options_before_loading_anything(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x"), "--method", "transformer_atribution"]) == 2
    error = capsys.readouterr().err
    assert "unknown method 'transformer_atribution'; hfrel's methods are: transformer_attribution" in error
    assert main(["demo", "--out", str(tmp_path / "x"), "--scenes", "0"]) == 2
    assert "--scenes must be between 1 and 32, got 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "file"), "--scenes", "1"]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_zero_shot_demo_runs_offline_in_under_a_minute(tmp_path):
    """`hfrel demo --zero-shot`: the bundled tiny CLIP, prompts, token relevance and panels, offline."""
    out = tmp_path / "zero_shot"
    done = _demo_command("--zero-shot", "--out", str(out), "--scenes", "2", timeout=60)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in sorted(out.iterdir())] == ["scene_0.png", "scene_1.png"]
    for path in sorted(out.iterdir()):
        _assert_panel(path, columns=1 + 3 * 2)
    assert "top prompts: 'a photo of a" in done.stdout
    assert "token relevance (transformer_attribution) for 'a photo of a" in done.stdout
    assert "transformer_attribution" in done.stdout and "class-agnostic" in done.stdout
