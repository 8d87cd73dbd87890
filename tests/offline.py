"""Running hfrel's console script in a subprocess as a user would, offline: this checkout's code first on the
path, no Hugging Face hub, one thread."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def environment(**extra: str) -> dict[str, str]:
    """This process's environment, plus this checkout on PYTHONPATH, the hub off and one thread (and `extra`)."""
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)


def hfrel_script() -> str:
    """The installed `hfrel` console script."""
    script = shutil.which("hfrel")
    assert script, "the `hfrel` console script is not installed: pip install -e ."
    return script
