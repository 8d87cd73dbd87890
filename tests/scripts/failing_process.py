"""`hfrel explain` as launched, except that explaining a batch fails on process 1 (a test harness).

Each process writes its exit code to `<out>.rank<N>.code` before exiting with it, so a test can see
that every process ended, and how.
"""

from __future__ import annotations

import os
import sys

import hfrel.pipeline.batches
from hfrel.cli import main
from hfrel.pipeline.processes import launched_rank


def broken(*args: object, **kwargs: object) -> list:
    raise RuntimeError(f"disk on fire on process {launched_rank()}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if launched_rank() == 1:
        hfrel.pipeline.batches.explain_batch = broken  # type: ignore[assignment]
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    out = argv[argv.index("--out") + 1]
    with open(f"{out}.rank{launched_rank()}.code", "w") as file:
        file.write(str(code))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
