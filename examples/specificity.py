"""What examples/class_specificity.py and examples/zero_shot_specificity.py share: their command line,
the top-two score, and how their markdown tables are kept in the docs.

Not a script of its own; both examples import it (run them from any folder: Python puts examples/ on
the import path of a script it runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hfrel.datasets._demo_model import MEASUREMENT_SEED


def add_scene_arguments(parser: argparse.ArgumentParser, docs_help: str, check_help: str) -> None:
    """The options both measurements take: how many scenes, in what batches, from which seed; the docs."""
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50, help="scenes per explain call")
    parser.add_argument("--seed", type=int, default=MEASUREMENT_SEED)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--docs", type=Path, help=docs_help)
    parser.add_argument("--check", action="store_true", help=check_help)


def top_two_found(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) whether the scene's two labels (B, 2) are the model's two highest logits, in either order."""
    predicted = logits.topk(2, dim=-1).indices.sort(dim=-1).values
    return (predicted == labels.sort(dim=-1).values).all(dim=-1)


def keep_in_docs(path: Path, lines: list[str], *, begin: str, end: str, check: bool, what: str) -> None:
    """Put `lines` between the markers `begin` and `end` in `path`, so the docs show this script's output;
    with `check`, only compare, and exit 1 if they differ. `what` names the lines in messages."""
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no markers for {what} ({begin} ... {end})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    updated = head + begin + "\n" + "\n".join(lines) + "\n" + end + tail
    if updated == text:
        return
    if check:
        print(f"{path}: this measurement is not what the docs show ({what})", file=sys.stderr)
        sys.exit(1)
    path.write_text(updated)
    print(f"wrote {what} into {path}")
