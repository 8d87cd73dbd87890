"""Explaining many images into files: the one pipeline behind `hfrel explain` and `hfrel.explain_images`.

Per image it writes, into `<out>/<name>/`, an overlay per (class, method), the paper's panel, the raw
maps (maps.npz) and, last, record.json: the image's summary record plus a fingerprint of everything
that determined those files, so a rerun reuses what is already done. `<out>/summary.json` is built
from the records in any order, `<out>/index.json` says which process did what, and `<out>/index.html`
(hfrel._html) shows every image's maps in a browser, rendered from summary.json alone.

Launched as several processes (`accelerate launch`, `torchrun`), each process takes every N-th input
(`items[rank::world]`), the records are gathered on the main process, and it alone writes
summary.json, index.json and index.html: the same files as a one-process run.

The parts: `inputs` (files and rows -> images), `processes` (launchers, gathers, shared failures),
`fingerprint` (what makes a result reusable), `records` (record/summary/index files), `writer`
(overlays, panels, maps.npz), `console` (what the user sees), `batches` (the share, batch by batch).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from hfrel._errors import InputError, LabelError
from hfrel._labels import class_names, fixed_labels
from hfrel._options import DEFAULT_METHOD
from hfrel.models._image_text import find_image_text_spec, image_text_specs
from hfrel.pipeline.batches import explain_items
from hfrel.pipeline.console import Console, closing_line, transformers_progress_bars
from hfrel.pipeline.inputs import items_from
from hfrel.pipeline.processes import Processes, join_processes
from hfrel.pipeline.records import Outcome
from hfrel.pipeline.settings import API_NAMES, CLI_NAMES, Settings, check_options

__all__ = ["API_NAMES", "CLI_NAMES", "Checkpoint", "Request", "Settings", "explain_images", "run"]


@dataclass(frozen=True)
class Request:
    """What the caller asked for, as given (checked by `run`, before any model is loaded)."""

    images: Any
    out: Path
    label: Any = None
    label_column: str | None = None
    image_column: str = "image"
    method: str | Sequence[str] = DEFAULT_METHOD
    start_layer: int = 0
    batch_size: int = 8
    top_k: int = 5
    cmap: str = "jet"
    alpha: float = 0.5
    original_size: bool = False
    progress: str = "auto"
    verbose: bool = False
    model_name: str | None = None
    text: Sequence[str] | None = None  # prompts, for image–text models


class ModelSource(Protocol):
    """Where the model comes from: one already in memory, or a checkpoint loaded once the processes are known."""

    def on_cpu(self) -> bool: ...

    def load(self, processes: Processes, device: torch.device | None) -> tuple[torch.nn.Module, Any]: ...


@dataclass(frozen=True)
class _InMemory:
    model: torch.nn.Module
    processor: Any

    def on_cpu(self) -> bool:
        return {p.device.type for p in self.model.parameters()} - {"meta"} <= {"cpu"}

    def load(self, processes: Processes, device: torch.device | None) -> tuple[torch.nn.Module, Any]:
        return self.model, self.processor  # used where it is: no moves


@dataclass(frozen=True)
class Checkpoint:
    """A hub id or local folder, loaded on `device` ("auto": each launched process on its own GPU)."""

    name: str
    device: str = "auto"
    progress: str = "auto"

    def on_cpu(self) -> bool:
        from hfrel._loading import resolve_device

        return resolve_device(self.device).type == "cpu"

    def load(self, processes: Processes, device: torch.device | None) -> tuple[torch.nn.Module, Any]:
        from hfrel._loading import load_classifier, resolve_device

        chosen = resolve_device(self.device)
        if self.device == "auto" and device is not None and device.type != "cpu":
            chosen = device  # each launched process on its own GPU
        with transformers_progress_bars(self.progress if processes.main else "never"):
            return load_classifier(self.name, device=chosen)


def run(request: Request, source: ModelSource, *, names: dict[str, str] = API_NAMES) -> Outcome:
    """The pipeline: check the options and find the inputs, join the launcher's processes, load the
    model, then explain this process's share and write the files. `names`: how messages spell options."""
    out = Path(request.out)
    methods = check_options(
        request.method,
        top_k=request.top_k,
        batch_size=request.batch_size,
        alpha=request.alpha,
        cmap=request.cmap,
        out=out,
        progress=request.progress,
        names=names,
    )
    prompts = _check_prompts(request, names)
    if request.label is not None and request.label_column is not None:
        raise LabelError(
            f"pass {names['label']} (the same classes for every image) or label_column (each example's own "
            f"class), not both"
        )
    items, problems = items_from(request.images, request.image_column, request.label_column)
    if not items:
        if len(problems) == 1:
            raise InputError(problems[0].error)
        raise InputError("no image to explain: " + "; ".join(p.error for p in problems))
    processes, device = join_processes(cpu=source.on_cpu())
    model, processor = processes.run_together(lambda: source.load(processes, device))
    config = getattr(model, "config", None)
    pair = find_image_text_spec(model)
    _check_model_for_prompts(model, pair, prompts, request, names)
    if pair is not None and prompts is not None:
        num_labels = len(prompts)
        names_of_classes = dict(enumerate(prompts))
        labels: tuple[int, ...] | None = tuple(range(num_labels))  # every prompt is explained
    else:
        num_labels = int(getattr(config, "num_labels", 0) or 0)
        if num_labels < 1:
            raise InputError(f"model must be a transformers image classifier with config.num_labels; got {type(model)}")
        names_of_classes = class_names(getattr(config, "id2label", None), num_labels)
        labels = None
        if request.label is not None:
            labels = fixed_labels(request.label, names_of_classes, num_labels, option=names["label"])
    settings = Settings(
        out=out,
        methods=methods,
        labels=labels,
        class_names=names_of_classes,
        start_layer=request.start_layer,
        top_k=min(request.top_k, num_labels),
        cmap=request.cmap,
        alpha=request.alpha,
        original_size=request.original_size,
        label_column=request.label_column,
        prompts=prompts if pair is not None else None,
        probabilities=pair.probabilities if pair is not None else "softmax",
        text_padding=_text_padding(model, pair),
    )
    text = request.model_name or str(getattr(config, "name_or_path", "") or type(model).__name__)
    console = Console(verbose=request.verbose, progress=request.progress, processes=processes)
    outcome = explain_items(
        model,
        processor,
        items,
        problems,
        settings,
        model_text=text,
        batch_size=request.batch_size,
        processes=processes,
        console=console,
        option_names=names,
    )
    if request.verbose and processes.main:
        console.write(closing_line(outcome, out), sys.stdout)
    return outcome


def _text_padding(model: torch.nn.Module, pair: Any) -> int | None:
    """The length prompts are padded to: the text tower's full length for models trained so (SigLIP)."""
    if pair is None or pair.text_padding != "max_length":
        return None
    return int(model.config.text_config.max_position_embeddings)


def _check_prompts(request: Request, names: dict[str, str]) -> tuple[str, ...] | None:
    """The prompts as a tuple of non-empty strings, or None; refused with a label (every prompt is explained)."""
    if request.text is None:
        return None
    prompts = (request.text,) if isinstance(request.text, str) else tuple(request.text)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise InputError(f"{names['text']} takes non-empty prompts; got {list(prompts)!r}")
    if request.label is not None or request.label_column is not None:
        raise LabelError(
            f"with {names['text']} every prompt is explained, each image's prompts ranked; drop {names['label']}"
        )
    return prompts


def _check_model_for_prompts(
    model: torch.nn.Module, pair: Any, prompts: tuple[str, ...] | None, request: Request, names: dict[str, str]
) -> None:
    """Prompts go with image–text models and only with them: a clear error either way (exit code 2)."""
    shown = request.model_name or type(model).__name__
    supported = ", ".join(sorted({c for spec in image_text_specs() for c in spec.classes}))
    if prompts is not None and pair is None:
        raise InputError(
            f"{names['text']} explains prompts with an image–text model ({supported}); {shown} is a "
            f"{type(model).__name__}, which scores classes: drop {names['text']} (use {names['label']} for classes)"
        )
    if prompts is None and pair is not None:
        raise InputError(
            f"{shown} is an image–text model ({type(model).__name__}): it scores images against prompts; give them "
            f'with {names["text"]}, e.g. {names["text"]} "a photo of a cat" {names["text"]} "a photo of a dog"'
        )


def explain_images(
    model: torch.nn.Module,
    processor: Any,
    images: Any,
    out: str | Path,
    *,
    label: int | str | Sequence[int | str] | None = None,
    label_column: str | None = None,
    image_column: str = "image",
    method: str | Sequence[str] = DEFAULT_METHOD,
    start_layer: int = 0,
    batch_size: int = 8,
    top_k: int = 5,
    cmap: str = "jet",
    alpha: float = 0.5,
    original_size: bool = False,
    progress: str = "auto",
    verbose: bool = False,
    model_name: str | None = None,
    text: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Explain many images into `out`, writing the files `hfrel explain` writes; returns the summary.

    `images`: image files and folders (a path or a list of them), or a dataset split: a `datasets`
    split or any sequence of dict examples whose `image_column` holds a PIL image (or a path, or a
    uint8 array). Examples are named `example-<index>`. What is explained: `label` (one class or a
    list of classes, by index or name, for every image), else with `label_column` each example's own
    class from that column, else each image's predicted class; a label column is never read unless named.
    `method`: a method name or a list of them (all share one forward pass per batch).
    `text`: prompts, for an image–text model (CLIPModel, SiglipModel, Siglip2Model, MetaClip2Model, with its
    processor holding a tokenizer): every prompt is explained for every image, with the prompts' token relevance.
    NaFlex models (Siglip2) keep each image's aspect ratio: its files are drawn and stored on its own patch grid.

    Launched as several processes (`accelerate launch`, `torchrun`), each explains its share and the
    main process writes summary.json and index.json. Images whose record.json matches this run's
    settings and input are reused, not recomputed. The model is used where it is (no moves).
    """
    request = Request(
        images=images,
        out=Path(out),
        label=label,
        label_column=label_column,
        image_column=image_column,
        method=method,
        start_layer=start_layer,
        batch_size=batch_size,
        top_k=top_k,
        cmap=cmap,
        alpha=alpha,
        original_size=original_size,
        progress=progress,
        verbose=verbose,
        model_name=model_name,
        text=text,
    )
    return run(request, _InMemory(model, processor)).summary
