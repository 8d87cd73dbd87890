"""`hfrel explain`: relevance maps for images on disk, with any local or hub checkpoint.

    hfrel explain photos/ --model facebook/deit-small-patch16-224 --label "tabby cat" --label 281

Per image it prints the top-k classes and writes, into --out/<image name>/, an overlay per
(class, method), the paper's panel (input + one column per class and method) and the raw maps
(maps.npz); --out/summary.json records every image (predictions, classes explained, files written)
and every input that was skipped. The work per batch (`explain_batch`) is separate from argument
parsing, and summary.json is built from per-image records (`summarise`), so runs can be split.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hfrel
from hfrel._errors import InputError, MethodError
from hfrel._images import Problem, find_images, load_image, model_view, output_names, to_original
from hfrel._labels import class_names, label_from_name
from hfrel._loading import load_classifier

SUMMARY = "summary.json"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain",
        help="explain images from disk with a local or hub checkpoint",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Exit codes: 0 when at least one image was explained; 2 for bad input (no readable image, "
        "missing model, unknown label, bad option); 1 for any other failure.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or folders of images")
    parser.add_argument("--model", required=True, metavar="ID_OR_DIR", help="hub id or local checkpoint folder")
    parser.add_argument(
        "--label",
        action="append",
        metavar="L",
        help="class to explain: an index or a class name (case-insensitive); repeat for one map per class. "
        "Default: each image's predicted class",
    )
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes printed per image (default 5)")
    parser.add_argument(
        "--method",
        action="append",
        metavar="M",
        help="method to run (see `hfrel methods`); repeat for several. Default: transformer_attribution",
    )
    parser.add_argument("--start-layer", type=int, default=0, metavar="S", help="first block combined (default 0)")
    parser.add_argument(
        "--out", type=Path, default=Path("hfrel-out"), metavar="DIR", help="output folder (default hfrel-out)"
    )
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per forward pass (default 8)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--cmap", default="jet", metavar="NAME", help="matplotlib colormap (default jet)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the heatmap over the image (0..1)")
    parser.add_argument(
        "--original-size",
        action="store_true",
        help="also draw each map on the photo at its original size (the processor's crop mapped back) "
        "and store those maps in maps.npz",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bars on stderr: auto shows them on a terminal only",
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Settings:
    """Everything a batch needs to know, resolved and checked before the first image is read."""

    out: Path
    methods: tuple[str, ...]
    labels: tuple[int, ...] | None  # None: each image's predicted class
    class_names: dict[int, str]
    start_layer: int
    top_k: int
    cmap: str
    alpha: float
    original_size: bool


@dataclass(frozen=True)
class Item:
    """One image file to explain: its place in the run, its path, and its output folder's name."""

    position: int
    path: Path
    name: str


def run(args: argparse.Namespace) -> int:
    methods = _check_options(args)
    paths, problems = find_images(args.inputs)
    inputs = len(paths) + len(problems)
    if not paths:
        if len(problems) == 1:
            raise InputError(problems[0].error)
        raise InputError("no image to explain: " + "; ".join(p.error for p in problems))
    with _progress_bars(args.progress):
        model, processor = load_classifier(args.model, device=args.device)
    config = model.config
    names = class_names(getattr(config, "id2label", None), config.num_labels)
    labels = None
    if args.label:
        labels = tuple(dict.fromkeys(label_from_name(text, names, config.num_labels) for text in args.label))
    settings = Settings(
        out=args.out,
        methods=methods,
        labels=labels,
        class_names=names,
        start_layer=args.start_layer,
        top_k=min(args.top_k, config.num_labels),
        cmap=args.cmap,
        alpha=args.alpha,
        original_size=args.original_size,
    )
    items = [Item(i, p, n) for i, (p, n) in enumerate(zip(paths, output_names(paths, [SUMMARY]), strict=True))]

    records: list[dict[str, Any]] = []
    with hfrel.attach(model) as explainer:
        if not 0 <= settings.start_layer < explainer.num_layers:
            raise MethodError(
                f"--start-layer must be in [0, {explainer.num_layers - 1}] (this model has {explainer.num_layers} "
                f"blocks); got {settings.start_layer}."
            )
        for problem in problems:  # reported once everything else is known to be usable
            _warn(f"skipped: {problem.error}")
        with _bar(len(items), args.progress) as bar:
            for start in range(0, len(items), args.batch_size):
                batch = items[start : start + args.batch_size]
                for record in explain_batch(explainer, processor, batch, settings):
                    records.append(record)
                    if record["status"] == "ok":
                        bar.write(_describe(record, settings), file=sys.stdout)
                    elif inputs > 1:
                        _warn(f"skipped: {record['error']}", bar)
                bar.update(len(batch))

    explained = sum(record["status"] == "ok" for record in records)
    if explained == 0 and inputs == 1:
        raise InputError(records[0]["error"])
    summary = summarise(settings, str(args.model), records, problems)
    write_summary(settings.out, summary)
    skipped = inputs - explained
    if explained == 0:
        raise InputError(f"none of the {inputs} inputs could be explained; see {settings.out / SUMMARY}")
    note = f", {skipped} skipped (listed in {SUMMARY})" if skipped else ""
    print(f"explained {explained} image{'s' * (explained != 1)}{note}; results in {settings.out}{os.sep}")
    return 0


def _check_options(args: argparse.Namespace) -> tuple[str, ...]:
    """Refuse bad option values before anything is loaded or written; returns the methods to run."""
    from hfrel.viz import _colormap

    methods = tuple(dict.fromkeys(args.method or ["transformer_attribution"]))
    known = hfrel.methods()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise MethodError(f"unknown method {unknown[0]!r}; hfrel's methods are: {', '.join(known)}.")
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1; got {args.top_k}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be in [0, 1]; got {args.alpha}")
    _colormap(args.cmap)
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; give a folder (it is created if missing)")
    return methods


# one batch ---------------------------------------------------------------------------------------


def explain_batch(
    explainer: hfrel.Explainer, processor: Any, batch: Sequence[Item], settings: Settings
) -> list[dict[str, Any]]:
    """Read, explain and draw one batch; one record per item, in order ("ok" or "failed").

    Unreadable files become "failed" records; the rest share one forward pass and one `explain` call
    (K classes per image as a (B, K) label table, all methods at once).
    """
    records: dict[int, dict[str, Any]] = {}
    photos, readable = [], []
    for item in batch:
        try:
            photos.append(load_image(item.path))
            readable.append(item)
        except InputError as error:
            records[item.position] = {
                "position": item.position,
                "input": str(item.path),
                "status": "failed",
                "error": str(error),
            }
    if readable:
        pixel_values = processor(images=photos, return_tensors="pt")["pixel_values"]
        label = None
        if settings.labels is not None:
            label = torch.tensor([settings.labels] * len(readable), dtype=torch.long)
        results = explainer.explain(
            pixel_values, label, method=list(settings.methods), start_layer=settings.start_layer
        )
        maps = {name: _with_target_axis(exp.cpu()) for name, exp in results.items()}
        first = maps[settings.methods[0]]
        targets = first["labels"]  # (B, K)
        logits = first["logits"].float()
        probabilities = logits.softmax(dim=-1)
        top = probabilities.topk(settings.top_k, dim=-1)
        views = model_view(pixel_values, processor)
        for b, (item, photo) in enumerate(zip(readable, photos, strict=True)):
            records[item.position] = _write_image(
                item,
                photo,
                views[b],
                {name: (m["relevance"][b], m["heatmap"][b]) for name, m in maps.items()},
                targets[b],
                logits[b],
                probabilities[b],
                top.indices[b],
                processor,
                settings,
            )
    return [records[item.position] for item in batch]


def _with_target_axis(exp: hfrel.Explanation) -> dict[str, torch.Tensor]:
    """An explanation's tensors with a K axis after B, whether one or several classes were asked for."""
    many = exp.labels.dim() == 2
    return {
        "relevance": exp.relevance if many else exp.relevance[:, None],
        "heatmap": exp.heatmap if many else exp.heatmap[:, None],
        "labels": exp.labels if many else exp.labels[:, None],
        "logits": exp.logits,
    }


def _write_image(
    item: Item,
    photo: Any,
    view: torch.Tensor,
    maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
    targets: torch.Tensor,
    logits: torch.Tensor,
    probabilities: torch.Tensor,
    top: torch.Tensor,
    processor: Any,
    settings: Settings,
) -> dict[str, Any]:
    """Write one image's overlays, panel and maps.npz; return its record (paths relative to --out)."""
    from hfrel import viz

    folder = settings.out / item.name
    folder.mkdir(parents=True, exist_ok=True)
    names = settings.class_names
    view_array = (view.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    arrays: dict[str, np.ndarray] = {
        "labels": targets.numpy().astype(np.int64),
        "logits": logits.numpy().astype(np.float32),
        "image": view_array,
    }
    originals: dict[str, np.ndarray] = {}
    for method, (relevance, heatmap) in maps.items():
        arrays[f"relevance_{method}"] = relevance.float().numpy()
        arrays[f"heatmap_{method}"] = heatmap.float().numpy()
        if settings.original_size:
            originals[method] = to_original(heatmap, photo, processor)
            arrays[f"original_{method}"] = originals[method].astype(np.float32)

    overlays, columns, titles = [], [], []
    for k, cls in enumerate(targets.tolist()):
        for method, (_, heatmap) in maps.items():
            stem = f"{method}-{cls}-{_slug(names[cls])}"
            entry = {"label": cls, "method": method, "file": f"{item.name}/{stem}.png"}
            viz.overlay(view_array, heatmap[k], settings.cmap, settings.alpha).save(folder / f"{stem}.png")
            if settings.original_size:
                picture = viz.overlay(photo, originals[method][k], settings.cmap, settings.alpha)
                picture.save(folder / f"{stem}.original.png")
                entry["original"] = f"{item.name}/{stem}.original.png"
            overlays.append(entry)
            columns.append(heatmap[k])
            titles.append(f"{names[cls]} ({float(probabilities[cls]):.1%})\n{method}")
    figure = viz.panel(
        view_array, columns, titles, input_title=item.path.name, cmap=settings.cmap, alpha=settings.alpha
    )
    figure.savefig(folder / "panel.png", dpi=100)
    np.savez_compressed(folder / "maps.npz", **arrays)

    def entry(cls: int) -> dict[str, Any]:
        return {
            "index": cls,
            "label": names[cls],
            "logit": float(logits[cls]),
            "probability": float(probabilities[cls]),
        }

    return {
        "position": item.position,
        "input": str(item.path),
        "status": "ok",
        "name": item.name,
        "size": {"width": photo.width, "height": photo.height},
        "model_input": {"width": int(view.shape[-1]), "height": int(view.shape[-2])},
        "predictions": [entry(int(c)) for c in top.tolist()],
        "explained": [entry(int(c)) for c in targets.tolist()],
        "files": {"panel": f"{item.name}/panel.png", "maps": f"{item.name}/maps.npz", "overlays": overlays},
    }


def _slug(name: str) -> str:
    """A class name as a safe, short file-name part ("tabby, tabby cat" -> "tabby-tabby-cat")."""
    return re.sub(r"[^0-9a-z]+", "-", name.casefold()).strip("-")[:40] or "class"


# the run's record ------------------------------------------------------------------------------


def summarise(
    settings: Settings, model: str, records: Sequence[dict[str, Any]], problems: Sequence[Problem] = ()
) -> dict[str, Any]:
    """summary.json from per-image records, in any order (e.g. gathered from several processes)."""
    ordered = sorted(records, key=lambda record: record["position"])
    failed = [{"input": p.input, "error": p.error} for p in problems]
    failed += [{"input": r["input"], "error": r["error"]} for r in ordered if r["status"] != "ok"]
    explained = None
    if settings.labels is not None:
        explained = [{"index": c, "label": settings.class_names[c]} for c in settings.labels]
    return {
        "hfrel": hfrel.__version__,
        "model": model,
        "methods": list(settings.methods),
        "labels": explained,  # None: each image's predicted class
        "start_layer": settings.start_layer,
        "top_k": settings.top_k,
        "original_size": settings.original_size,
        "explained": sum(r["status"] == "ok" for r in ordered),
        "failed": failed,
        "images": ordered,
    }


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write summary.json whole or not at all (a temporary file renamed into place)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SUMMARY
    partial = path.with_name(f".{SUMMARY}.partial")
    partial.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


# console ----------------------------------------------------------------------------------------


def _describe(record: dict[str, Any], settings: Settings) -> str:
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


def _warn(message: str, bar: Any = None) -> None:
    line = f"hfrel: {message}"
    if bar is None:
        print(line, file=sys.stderr)
    else:
        bar.write(line, file=sys.stderr)


def _bar(total: int, mode: str) -> Any:
    from tqdm import tqdm

    disable = {"auto": None, "always": False, "never": True}[mode]  # None: only on a terminal
    return tqdm(total=total, unit="image", desc="explaining", disable=disable, file=sys.stderr, dynamic_ncols=True)


@contextmanager
def _progress_bars(mode: str) -> Iterator[None]:
    """transformers' and the hub's own bars (weights, downloads) follow --progress, restored after."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    show = mode == "always" or (mode == "auto" and sys.stderr.isatty())
    (logging.enable_progress_bar if show else logging.disable_progress_bar)()
    try:
        yield
    finally:
        (logging.enable_progress_bar if was_enabled else logging.disable_progress_bar)()
