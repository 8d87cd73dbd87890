"""`import hfrel` stays light, and the submodules the docs use are reachable right after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBMODULES = ("evaluation", "viz", "datasets", "integrations", "pipeline")
HEAVY = ("matplotlib", "hfrel.evaluation", "hfrel.viz", "hfrel.integrations", "hfrel.pipeline", "hfrel.datasets")

PROBE = f"""
import json, sys
import hfrel
loaded_by_import = [name for name in {HEAVY!r} if name in sys.modules]
reached = {{name: type(getattr(hfrel, name)).__name__ for name in {SUBMODULES!r}}}
api = callable(hfrel.explain_images) and "evaluation" in dir(hfrel)
print(json.dumps({{"loaded": loaded_by_import, "reached": reached, "api": api}}))
"""


def test_submodules_are_reachable_after_import_hfrel_and_loaded_only_when_used():
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["loaded"] == []  # none of them imported by `import hfrel` itself
    assert result["reached"] == dict.fromkeys(SUBMODULES, "module")
    assert result["api"]
