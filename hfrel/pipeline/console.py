"""What a run tells its user: per-image lines on stdout, skipped inputs on stderr, progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hfrel.pipeline.processes import Processes
from hfrel.pipeline.records import SUMMARY, Outcome
from hfrel.pipeline.settings import Settings


class Console:
    """What a run tells its user: per-image lines on stdout, skipped inputs on stderr, a progress bar.

    Each message is written and flushed at once, so lines of several processes never mix mid-line.
    """

    def __init__(self, *, verbose: bool, progress: str, processes: Processes) -> None:
        self.verbose = verbose
        self.progress = progress
        self.processes = processes

    def write(self, text: str, stream: Any) -> None:
        from tqdm import tqdm

        with tqdm.external_write_mode(file=stream):
            stream.write(text + "\n")
            stream.flush()

    def image(self, record: dict[str, Any], settings: Settings) -> None:
        if self.verbose:
            self.write(describe(record, settings), sys.stdout)

    def skipped(self, message: str) -> None:
        if self.verbose:
            self.write(f"hfrel: skipped: {message}", sys.stderr)

    def bar(self, total: int) -> Any:
        """A progress bar over this process's images; with several processes, on the main one only."""
        from tqdm import tqdm

        disable = {"auto": None, "always": False, "never": True}[self.progress]  # None: only on a terminal
        if not self.processes.main:
            disable = True
        description = "explaining"
        if self.processes.world > 1:
            description = f"explaining (process 0 of {self.processes.world})"
        return tqdm(total=total, unit="image", desc=description, disable=disable, file=sys.stderr, dynamic_ncols=True)


def describe(record: dict[str, Any], settings: Settings) -> str:
    """The lines printed for one explained image: where its files are, its top-k, what was explained."""
    size = record["size"]
    lines = [f"{record['input']} ({size['width']}x{size['height']}) -> {settings.out / record['name']}"]
    width = max(len(f"{p['label']} ({p['index']})") for p in record["predictions"])
    for rank, p in enumerate(record["predictions"], start=1):
        name = f"{p['label']} ({p['index']})"
        lines.append(f"  {rank:>2}. {name:<{width}}  logit {p['logit']:8.4f}  p {p['probability']:.4f}")
    explained = ", ".join(f"{p['label']} ({p['index']})" for p in record["explained"])
    lines.append(f"  explained: {explained}; {', '.join(settings.methods)}")
    return "\n".join(lines)


def closing_line(outcome: Outcome, out: Path) -> str:
    """The last line of a run: how many images were explained (reused, on how many processes), skipped."""
    explained = outcome.summary["explained"]
    skipped = outcome.inputs - explained
    line = f"explained {explained} image{'s' * (explained != 1)}"
    if outcome.processes.world > 1:
        line += f" on {outcome.processes.world} processes"
    if outcome.reused:
        line += f" ({outcome.reused} reused from an earlier run)"
    if skipped:
        line += f", {skipped} skipped (listed in {SUMMARY})"
    return f"{line}; results in {out}{os.sep}"


@contextmanager
def transformers_progress_bars(mode: str) -> Iterator[None]:
    """transformers' and the hub's own bars (weights, downloads) follow --progress, restored after."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    show = mode == "always" or (mode == "auto" and sys.stderr.isatty())
    (logging.enable_progress_bar if show else logging.disable_progress_bar)()
    try:
        yield
    finally:
        (logging.enable_progress_bar if was_enabled else logging.disable_progress_bar)()
