"""What a run is asked to do: the options as checked before anything is loaded or written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hfrel._errors import InputError
from hfrel._options import method_names

# The spelling of each option in messages: the CLI's flags, or the Python API's keyword names.
CLI_NAMES = {
    "method": "--method",
    "label": "--label",
    "top_k": "--top-k",
    "batch_size": "--batch-size",
    "alpha": "--alpha",
    "out": "--out",
    "start_layer": "--start-layer",
    "progress": "--progress",
    "text": "--text",
}
API_NAMES = {key: key for key in CLI_NAMES}
PROGRESS = ("auto", "always", "never")


@dataclass(frozen=True)
class Settings:
    """Everything a batch needs to know, resolved and checked before the first image is read."""

    out: Path
    methods: tuple[str, ...]
    labels: tuple[int, ...] | None  # None: each image's predicted class (or its label column's)
    class_names: dict[int, str]
    start_layer: int
    top_k: int
    cmap: str
    alpha: float
    original_size: bool
    label_column: str | None = None  # examples only: explain the class this column names
    prompts: tuple[str, ...] | None = None  # image–text models: every prompt is explained, classes are prompts
    probabilities: str = "softmax"  # how logits read as probabilities: "softmax" over classes, or a "sigmoid" each
    text_padding: int | None = None  # prompts padded to this many tokens (SigLIP); None: to the longest prompt


def check_options(
    method: object,
    *,
    top_k: int,
    batch_size: int,
    alpha: float,
    cmap: str,
    out: Path,
    progress: str,
    names: Mapping[str, str],
) -> tuple[str, ...]:
    """Refuse bad option values before anything is loaded or written; returns the methods to run."""
    from hfrel.viz import _colormap

    chosen = method_names(method, option=names["method"])
    if top_k < 1:
        raise InputError(f"{names['top_k']} must be at least 1; got {top_k}")
    if batch_size < 1:
        raise InputError(f"{names['batch_size']} must be at least 1; got {batch_size}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"{names['alpha']} must be in [0, 1]; got {alpha}")
    if progress not in PROGRESS:
        raise InputError(f"{names['progress']} must be 'auto', 'always' or 'never'; got {progress!r}")
    _colormap(cmap)
    if out.exists() and not out.is_dir():
        raise InputError(f"{names['out']} {out} is a file; give a folder (it is created if missing)")
    return chosen
