"""An evaluation report as files: report.json, a Markdown table, the perturbation curves as a picture, and
report.html showing them all in a browser."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfrel._errors import InputError
from hfrel._html import report_page

if TYPE_CHECKING:
    import matplotlib.figure

# (report key, column title) in the order of the paper's tables; AUC arrows say which way is better.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pixel_accuracy", "pixel acc."),
    ("miou", "mIoU"),
    ("map", "mAP"),
    ("pointing_game", "pointing game"),
    ("relevance_mass", "relevance mass"),
    ("rank_accuracy", "rank acc."),
    ("positive_perturbation_auc", "positive AUC (lower is better)"),
    ("negative_perturbation_auc", "negative AUC (higher is better)"),
)


def description(report: dict[str, Any], code: str = "`") -> str:
    """One line on what was measured: model, data, items, explained class, threshold, unperturbed accuracy."""
    explained = "the dataset label" if report["label"] == "dataset" else "the predicted class"
    line = (
        f"Model {code}{report['model']}{code} on {code}{report['data']}{code}: {report['n']} items; maps explain "
        f"{explained} (start_layer {report['start_layer']}); foreground above the map's {report['threshold']}. "
        "All values in percent."
    )
    if report["unperturbed_accuracy"] is not None:
        return line + f" Top-1 accuracy on the unperturbed images: {report['unperturbed_accuracy']:.2f}."
    return line + f" Perturbation test {report['perturbation']}."


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: a line on what was measured, one table row per method, and what was skipped."""
    lines = [description(report), ""]
    lines.append("| method | " + " | ".join(title for _, title in COLUMNS) + " |")
    lines.append("| --- |" + " ---: |" * len(COLUMNS))
    for method, values in report["methods"].items():
        cells = ["n/a" if values.get(key) is None else f"{values[key]:.2f}" for key, _ in COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if report["skipped"]:
        lines += ["", f"Skipped {len(report['skipped'])} items:", ""]
        lines += [f"- `{s['item']}`: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def perturbation_figure(report: dict[str, Any]) -> matplotlib.figure.Figure:
    """Top-1 accuracy against the fraction of pixels removed, one line per method, both tests side by side."""
    from matplotlib.figure import Figure

    if report["unperturbed_accuracy"] is None:
        raise InputError(f"this report has no perturbation curves: {report['perturbation']}.")
    steps = report["perturbation_steps"]
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    titles = {"positive": "positive: most relevant removed first", "negative": "negative: least relevant first"}
    for axis, test in zip(axes, ("positive", "negative"), strict=True):
        for method, values in report["methods"].items():
            auc = values[f"{test}_perturbation_auc"]
            axis.plot(steps, values[f"{test}_perturbation_accuracy"], marker="o", ms=3, label=f"{method} ({auc:.1f})")
        axis.set_title(titles[test], fontsize=10)
        axis.set_xlabel("fraction of pixels removed")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, title="method (AUC)", title_fontsize=7)
    axes[0].set_ylabel("top-1 accuracy (%)")
    return figure


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write `out/report.json`, `out/report.md`, `out/report.html` and (when the perturbation test ran)
    `out/perturbation.png`.

    Everything is rendered in memory first, so a failure leaves no half-written report behind.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out must be a folder; {folder} is a file.")
    contents: dict[str, bytes] = {
        "report.json": (json.dumps(report, indent=2, allow_nan=False) + "\n").encode(),
        "report.md": markdown_table(report).encode(),
    }
    if report["unperturbed_accuracy"] is not None:
        picture = io.BytesIO()
        perturbation_figure(report).savefig(picture, format="png", dpi=120)
        contents["perturbation.png"] = picture.getvalue()
    plot = "perturbation.png" if "perturbation.png" in contents else None
    contents["report.html"] = report_page(report, COLUMNS, description(report, code=""), plot).encode()
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "perturbation.png"
    if "perturbation.png" not in contents and stale.is_file():
        stale.unlink()  # an earlier run's curves would not belong to this report
    written = []
    for name, payload in contents.items():
        (folder / name).write_bytes(payload)
        written.append(folder / name)
    return written
