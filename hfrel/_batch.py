"""Explaining many images into files: the pipeline behind `hfrel explain` and `hfrel.explain_images`.

Per image it writes, into `<out>/<name>/`, an overlay per (class, method), the paper's panel, the raw
maps (maps.npz) and, last, record.json: the image's summary record plus a fingerprint of everything
that determined those files, so a rerun reuses what is already done. `<out>/summary.json` is built
from the records in any order (`summarise`), `<out>/index.json` says which process did what, and
`<out>/index.html` (hfrel._html) shows every image's maps in a browser.

Launched as several processes (`accelerate launch`, `torchrun`), each process takes every N-th input
(`items[rank::world]`), the records are gathered on the main process, and it alone writes
summary.json, index.json and index.html: the same files as a one-process run.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

import hfrel
from hfrel._errors import HfrelError, InputError, LabelError, MethodError
from hfrel._html import INDEX_PAGE, write_index
from hfrel._images import Problem, find_images, load_image, model_view, output_names, to_original, to_rgb
from hfrel._labels import check_index, class_names, label_from_name

SUMMARY = "summary.json"
INDEX = "index.json"
RECORD = "record.json"

# The spelling of each option in messages: the CLI's flags, or the Python API's keyword names.
CLI_NAMES = {
    "top_k": "--top-k",
    "batch_size": "--batch-size",
    "alpha": "--alpha",
    "out": "--out",
    "start_layer": "--start-layer",
}
API_NAMES = {key: key for key in CLI_NAMES}


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


# inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    """An input as read: the upright RGB image and, from a label column, the class to explain."""

    image: Image.Image
    label: int | None = None


class FileSource:
    """An image file. Its identity for reruns is its resolved path, size and modification time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = str(path)  # how records and messages name it
        self.title = path.name  # the panel's input title

    def identity(self) -> dict[str, Any]:
        """What makes this input the same one next time, read without decoding the image."""
        try:
            stat = self.path.stat()
        except OSError:
            return {"file": str(self.path.resolve()), "missing": True}
        return {"file": str(self.path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def read(self, num_labels: int, names: Mapping[int, str]) -> Photo:
        return Photo(load_image(self.path))


class ExampleSource:
    """Example `index` of a dataset split (anything indexable whose items are dicts of columns)."""

    def __init__(self, examples: Any, index: int, image_column: str, label_column: str | None) -> None:
        self.examples = examples
        self.index = index
        self.image_column = image_column
        self.label_column = label_column
        self.text = f"example {index}"
        self.title = self.text

    def read(self, num_labels: int, names: Mapping[int, str]) -> Photo:
        example = self.examples[self.index]
        if not isinstance(example, Mapping):
            raise InputError(f"{self.text} is a {type(example).__name__}, not a dict of columns")
        if self.image_column not in example:
            raise InputError(f"{self.text} has no column {self.image_column!r}; its columns are {_columns(example)}")
        image = _to_image(example[self.image_column], f"{self.text}'s {self.image_column!r}")
        label = None
        if self.label_column is not None:
            if self.label_column not in example:
                raise InputError(
                    f"{self.text} has no column {self.label_column!r}; its columns are {_columns(example)}"
                )
            label = _example_label(example[self.label_column], num_labels, names, self.text, self.label_column)
        return Photo(image, label)


@dataclass(frozen=True)
class Item:
    """One input to explain: its place in the run, its output folder's name, and where it comes from."""

    position: int
    name: str
    source: FileSource | ExampleSource = field(compare=False)


def _columns(example: Mapping) -> str:
    return ", ".join(repr(str(key)) for key in example) or "none"


def _to_image(value: Any, what: str) -> Image.Image:
    """A dataset's image cell -> upright RGB: a PIL image, a path, an array, or an undecoded
    `datasets` cell ({"bytes": ..., "path": ...})."""
    if isinstance(value, Image.Image):
        try:  # `datasets` decodes lazily: a broken file surfaces here
            return to_rgb(ImageOps.exif_transpose(value))
        except Exception as error:
            raise InputError(f"{what} is an image Pillow cannot decode ({type(error).__name__}: {error})") from error
    if isinstance(value, (str, os.PathLike)):
        return load_image(value)
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            try:
                with Image.open(io.BytesIO(value["bytes"])) as opened:
                    opened.load()
                    return to_rgb(ImageOps.exif_transpose(opened))
            except Exception as error:
                raise InputError(f"{what} holds bytes Pillow cannot read as an image ({error})") from error
        if value.get("path"):
            return load_image(value["path"])
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and (value.ndim == 2 or value.shape[-1] in (3, 4)):
        return to_rgb(Image.fromarray(value))
    raise InputError(
        f"{what} is a {type(value).__name__}; expected a PIL image, an image path, a uint8 (H, W[, 3|4]) array, "
        f"or a `datasets` image cell"
    )


def _example_label(value: Any, num_labels: int, names: Mapping[int, str], text: str, column: str) -> int:
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, str):
        return label_from_name(value, names, num_labels)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if not 0 <= int(value) < num_labels:
            raise LabelError(
                f"{text}'s {column!r} is {int(value)}, but the model has {num_labels} classes [0, {num_labels - 1}]: "
                f"the column must hold the model's class indices or class names"
            )
        return int(value)
    raise LabelError(f"{text}'s {column!r} is {value!r}; expected a class index or a class name")


def items_from(
    images: Any, image_column: str = "image", label_column: str | None = None
) -> tuple[list[Item], list[Problem]]:
    """What to explain, from file or folder paths, or from a dataset split of dict examples.

    Paths go through `find_images` (folders one level deep, sorted by name); examples keep their
    index as position and are named `example-<index>` (six digits at least).
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, Mapping):
        raise InputError(
            f"images is a mapping with keys {', '.join(map(repr, list(images)[:5]))}: pass one split of a "
            f"DatasetDict (e.g. dataset['validation']), or a list of image paths"
        )
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise InputError(
            f"images must be image paths, folders, or an indexable dataset split with a len() (got "
            f"{type(images).__name__}); a streaming dataset cannot be split among processes by index"
        )
    if len(images) == 0:
        raise InputError("no image to explain: images is empty")
    first = images[0]
    if isinstance(first, Mapping):
        for column in (image_column, label_column):
            if column is not None and column not in first:
                raise InputError(f"the examples have no column {column!r}; their columns are {_columns(first)}")
        items = [
            Item(i, f"example-{i:06d}", ExampleSource(images, i, image_column, label_column))
            for i in range(len(images))
        ]
        return items, []
    if label_column is not None:
        raise InputError("label_column applies to dataset examples, not to image files")
    paths = list(images)
    wrong = [p for p in paths if not isinstance(p, (str, os.PathLike))]
    if wrong:
        raise InputError(
            f"images must be all paths or all dict examples; got a {type(wrong[0]).__name__} among them "
            f"(to explain in-memory images, pass examples such as [{{'image': pil_image}}, ...])"
        )
    found, problems = find_images(paths)
    names = output_names(found, [SUMMARY, INDEX, INDEX_PAGE])
    return [Item(i, name, FileSource(path)) for i, (path, name) in enumerate(zip(found, names, strict=True))], problems


# checks --------------------------------------------------------------------------------------------


def check_options(
    methods: Sequence[str],
    *,
    top_k: int,
    batch_size: int,
    alpha: float,
    cmap: str,
    out: Path,
    names: Mapping[str, str],
) -> tuple[str, ...]:
    """Refuse bad option values before anything is loaded or written; returns the methods to run."""
    from hfrel.viz import _colormap

    chosen = tuple(dict.fromkeys(methods or ["transformer_attribution"]))
    known = hfrel.methods()
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise MethodError(f"unknown method {unknown[0]!r}; hfrel's methods are: {', '.join(known)}.")
    if top_k < 1:
        raise InputError(f"{names['top_k']} must be at least 1; got {top_k}")
    if batch_size < 1:
        raise InputError(f"{names['batch_size']} must be at least 1; got {batch_size}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"{names['alpha']} must be in [0, 1]; got {alpha}")
    _colormap(cmap)
    if out.exists() and not out.is_dir():
        raise InputError(f"{names['out']} {out} is a file; give a folder (it is created if missing)")
    return chosen


# processes -------------------------------------------------------------------------------------------

_WORLD_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def launched_world() -> int | None:
    """The number of processes a launcher (accelerate launch, torchrun, mpirun) started, or None when
    this process was started on its own. Read from the environment, as accelerate reads it."""
    for variable in _WORLD_VARIABLES:
        if os.environ.get(variable, "").strip().isdigit():
            return int(os.environ[variable])
    return 1 if os.environ.get("LOCAL_RANK", "").strip().isdigit() else None


def launched_rank() -> int:
    """This process's rank as its launcher set it (0 when started on its own)."""
    for variable in _RANK_VARIABLES:
        if os.environ.get(variable, "").strip().isdigit():
            return int(os.environ[variable])
    return 0


@dataclass(frozen=True)
class Processes:
    """The processes sharing a run: this one's rank, how many, and how to gather objects on all."""

    rank: int = 0
    world: int = 1
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order, on every process."""
        if not self.distributed:
            return [value]
        from accelerate.utils import gather_object

        return list(gather_object([value]))


def join_processes(cpu: bool) -> tuple[Processes, torch.device | None]:
    """The launcher's processes through `accelerate.PartialState` (the device it gives this process);
    on its own, a single process and no accelerate state at all (so a later `Accelerator()` in the
    same program is configured as if hfrel had not run).

    `cpu`: run the processes on the CPU (gloo); accelerate otherwise picks each process's GPU.
    """
    world = launched_world()
    if world is None:
        return Processes(), None
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.num_processes != world:
        raise HfrelError(
            f"the launcher started {world} processes but accelerate's state counts {state.num_processes}, so each "
            f"would explain everything: an Accelerator or PartialState made earlier in this program decided it; "
            f"make it with cpu={cpu} (on CPUs the processes need cpu=True to join over gloo)"
        )
    return Processes(state.process_index, state.num_processes, True), state.device


# fingerprints --------------------------------------------------------------------------------------


def _digest(*parts: bytes | str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


def _tensor_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return _digest(str(tensor.dtype), str(tuple(tensor.shape)), flat.view(torch.uint8).numpy().tobytes())


def weights_digest(model: torch.nn.Module) -> str:
    """A sha256 of the model's configuration and every parameter and buffer, by name.

    Weights that accelerate offloads (meta tensors between calls) are loaded module by module to be
    read; a meta tensor no hook can load is an error, not a guess.
    """
    from accelerate.utils import align_module_device, has_offloaded_params

    tensors = dict(model.state_dict(keep_vars=True))
    digests = {name: _tensor_digest(t) for name, t in tensors.items() if t.device.type != "meta"}
    for prefix, module in model.named_modules():
        if not has_offloaded_params(module):
            continue
        with align_module_device(module, torch.device("cpu")):
            for name, tensor in module.state_dict(keep_vars=True).items():
                full = f"{prefix}.{name}" if prefix else name
                if full not in digests and tensor.device.type != "meta":
                    digests[full] = _tensor_digest(tensor)
    unread = sorted(set(tensors) - set(digests))
    if unread:
        raise InputError(
            f"the model's weight {unread[0]} is on the meta device and no accelerate hook loads it: load the "
            f"model's weights before explaining"
        )
    config = model.config.to_json_string() if hasattr(model, "config") else type(model).__name__
    return _digest(config, *(f"{name}={digests[name]}" for name in sorted(digests)))


def run_fingerprint(model: torch.nn.Module, processor: Any, settings: Settings) -> dict[str, Any]:
    """Everything besides the input that determines an image's files; a record is reused only if equal."""
    import transformers

    to_json = getattr(processor, "to_json_string", None)
    processor_text = to_json() if callable(to_json) else repr(processor)
    return {
        "hfrel": hfrel.__version__,
        "transformers": transformers.__version__,
        "model": weights_digest(model),
        "processor": _digest(type(processor).__name__, processor_text),
        "classes": _digest(json.dumps(settings.class_names, sort_keys=True, ensure_ascii=False)),
        "methods": list(settings.methods),
        "labels": None if settings.labels is None else list(settings.labels),
        "label_column": settings.label_column,
        "start_layer": settings.start_layer,
        "top_k": settings.top_k,
        "cmap": settings.cmap,
        "alpha": settings.alpha,
        "original_size": settings.original_size,
    }


def _example_identity(photo: Photo) -> dict[str, Any]:
    image = photo.image
    pixels = _digest(image.mode, str(image.size), image.tobytes())
    return {"pixels": pixels, "label": photo.label}


# one batch ---------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """An item read and ready for the model, with the fingerprint its record will carry."""

    item: Item
    photo: Photo
    fingerprint: dict[str, Any]


def explain_batch(
    explainer: hfrel.Explainer, processor: Any, batch: Sequence[Loaded], settings: Settings
) -> list[dict[str, Any]]:
    """Explain and draw one batch of read images; one "ok" record per image, in order.

    All images share one forward pass and one `explain` call (K classes per image as a (B, K) label
    table, or one class per image from a label column; all methods at once).
    """
    photos = [entry.photo.image for entry in batch]
    pixel_values = processor(images=photos, return_tensors="pt")["pixel_values"]
    label = None
    if settings.labels is not None:
        label = torch.tensor([settings.labels] * len(batch), dtype=torch.long)
    elif settings.label_column is not None:
        label = torch.tensor([entry.photo.label for entry in batch], dtype=torch.long)
    results = explainer.explain(pixel_values, label, method=list(settings.methods), start_layer=settings.start_layer)
    maps = {name: _with_target_axis(exp.cpu()) for name, exp in results.items()}
    first = maps[settings.methods[0]]
    targets = first["labels"]  # (B, K)
    logits = first["logits"].float()
    probabilities = logits.softmax(dim=-1)
    top = probabilities.topk(settings.top_k, dim=-1)
    views = model_view(pixel_values, processor)
    return [
        _write_image(
            entry.item,
            entry.photo.image,
            views[b],
            {name: (m["relevance"][b], m["heatmap"][b]) for name, m in maps.items()},
            targets[b],
            logits[b],
            probabilities[b],
            top.indices[b],
            processor,
            settings,
        )
        for b, entry in enumerate(batch)
    ]


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
    photo: Image.Image,
    view: torch.Tensor,
    maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
    targets: torch.Tensor,
    logits: torch.Tensor,
    probabilities: torch.Tensor,
    top: torch.Tensor,
    processor: Any,
    settings: Settings,
) -> dict[str, Any]:
    """Write one image's overlays, panel and maps.npz; return its record (paths relative to the output)."""
    from hfrel import viz

    folder = settings.out / item.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD).unlink(missing_ok=True)  # the files below are no longer those a stale record describes
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
        view_array, columns, titles, input_title=item.source.title, cmap=settings.cmap, alpha=settings.alpha
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
        "input": item.source.text,
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


# records kept for reruns ---------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    """Write a JSON file whole or not at all (a temporary file renamed into place)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def save_record(out: Path, record: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """record.json, written after every other file of the image, so it vouches only for finished work."""
    _write_json(out / record["name"] / RECORD, {"fingerprint": fingerprint, "record": record})


def _listed_files(record: dict[str, Any]) -> list[str]:
    files = record["files"]
    listed = [files["panel"], files["maps"]]
    for overlay in files["overlays"]:
        listed += [overlay[key] for key in ("file", "original") if key in overlay]
    return listed


def reusable_record(out: Path, item: Item, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The record an earlier run left for this item, if it was made with the same fingerprint and
    every file it lists is still there; its position and input text are this run's."""
    try:
        saved = json.loads((out / item.name / RECORD).read_text(encoding="utf-8"))
        record = saved["record"]
        if saved["fingerprint"] != fingerprint or record["status"] != "ok" or record["name"] != item.name:
            return None
        if not all((out / path).is_file() for path in _listed_files(record)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {**record, "position": item.position, "input": item.source.text}


# the run -------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Outcome:
    """A finished run: the summary (as written to summary.json), and this run's own bookkeeping."""

    summary: dict[str, Any]
    index: dict[str, Any]
    inputs: int  # images found plus inputs that could not be
    reused: int
    processes: Processes


def explain_items(
    model: torch.nn.Module,
    processor: Any,
    items: Sequence[Item],
    problems: Sequence[Problem],
    settings: Settings,
    *,
    model_text: str,
    batch_size: int,
    processes: Processes,
    console: Console,
    option_names: Mapping[str, str],
) -> Outcome:
    """Explain this process's share of `items` (reusing finished records), gather every process's
    records, and write summary.json and index.json on the main process.

    Raises InputError (on every process, after the summary is written) when nothing could be
    explained; when the only input fails, raises its error and writes nothing.
    """
    inputs = len(items) + len(problems)
    with hfrel.attach(model) as explainer:
        if not 0 <= settings.start_layer < explainer.num_layers:
            raise MethodError(
                f"{option_names['start_layer']} must be in [0, {explainer.num_layers - 1}] (this model has "
                f"{explainer.num_layers} blocks); got {settings.start_layer}."
            )
        base = run_fingerprint(model, processor, settings)
        if processes.main:
            for problem in problems:  # reported once everything else is known to be usable
                console.skipped(problem.error)
        share = list(items[processes.rank :: processes.world])
        records, reused = _explain_share(explainer, processor, share, settings, base, batch_size, console, inputs)

    shard = {
        "process": processes.rank,
        "records": records,
        "reused": reused,
    }
    shards = processes.gather(shard)
    gathered = [record for each in shards for record in each["records"]]
    explained = sum(record["status"] == "ok" for record in gathered)
    if explained == 0 and inputs == 1:
        raise InputError(gathered[0]["error"])
    summary = summarise(settings, model_text, gathered, problems)
    index = _index(shards, gathered, processes)
    if processes.main:
        write_summary(settings.out, summary)
        _write_json(settings.out / INDEX, index)
        write_index(settings.out)  # index.html, rendered from summary.json alone
    if explained == 0:
        raise InputError(f"none of the {inputs} inputs could be explained; see {settings.out / SUMMARY}")
    return Outcome(summary, index, inputs, index["reused"], processes)


def _explain_share(
    explainer: hfrel.Explainer,
    processor: Any,
    share: Sequence[Item],
    settings: Settings,
    base: dict[str, Any],
    batch_size: int,
    console: Console,
    inputs: int,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Records for this process's items, in order of completion; and the positions reused."""
    records: list[dict[str, Any]] = []
    reused: list[int] = []
    pending: list[Loaded] = []
    num_labels = len(settings.class_names)

    def fail(item: Item, error: HfrelError) -> None:
        records.append({"position": item.position, "input": item.source.text, "status": "failed", "error": str(error)})
        if inputs > 1:
            console.skipped(str(error))

    def flush(bar: Any) -> None:
        for entry, record in zip(pending, explain_batch(explainer, processor, pending, settings), strict=True):
            save_record(settings.out, record, entry.fingerprint)
            records.append(record)
            console.image(record, settings)
        bar.update(len(pending))
        pending.clear()

    with console.bar(len(share)) as bar:
        for item in share:
            source = item.source
            try:
                if isinstance(source, FileSource):
                    fingerprint = {**base, "input": source.identity()}
                    photo = None
                else:  # an example is read to know what it holds
                    photo = source.read(num_labels, settings.class_names)
                    fingerprint = {**base, "input": {"example": source.index, **_example_identity(photo)}}
                fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from record.json
                earlier = reusable_record(settings.out, item, fingerprint)
                if earlier is not None:
                    records.append(earlier)
                    reused.append(item.position)
                    bar.update(1)
                    continue
                if photo is None:
                    photo = source.read(num_labels, settings.class_names)
            except HfrelError as error:
                fail(item, error)
                bar.update(1)
                continue
            pending.append(Loaded(item, photo, fingerprint))
            if len(pending) == batch_size:
                flush(bar)
        if pending:
            flush(bar)
    return records, reused


def _index(shards: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], processes: Processes) -> dict[str, Any]:
    """index.json: how the run was split, and which images each process computed, reused or failed."""
    by_position = {record["position"]: record for record in records}
    entries = []
    for shard in shards:
        reused = set(shard["reused"])
        positions = sorted(record["position"] for record in shard["records"])
        entries.append(
            {
                "process": shard["process"],
                "computed": [by_position[p]["input"] for p in positions if p not in reused and _ok(by_position[p])],
                "reused": [by_position[p]["input"] for p in positions if p in reused],
                "failed": [by_position[p]["input"] for p in positions if not _ok(by_position[p])],
            }
        )
    return {
        "hfrel": hfrel.__version__,
        "processes": processes.world,
        "sharding": "interleaved: process r of N takes inputs r, r + N, r + 2N, ... (in summary.json's order)",
        "images": len(records),
        "computed": sum(len(e["computed"]) for e in entries),
        "reused": sum(len(e["reused"]) for e in entries),
        "failed": sum(len(e["failed"]) for e in entries),
        "shards": entries,
    }


def _ok(record: dict[str, Any]) -> bool:
    return record["status"] == "ok"


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
    summary: dict[str, Any] = {
        "hfrel": hfrel.__version__,
        "model": model,
        "methods": list(settings.methods),
        "labels": explained,  # None: each image's predicted class, or its label column's
    }
    if settings.label_column is not None:
        summary["label_column"] = settings.label_column
    summary.update(
        {
            "start_layer": settings.start_layer,
            "top_k": settings.top_k,
            "original_size": settings.original_size,
            "explained": sum(r["status"] == "ok" for r in ordered),
            "failed": failed,
            "images": ordered,
        }
    )
    return summary


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write summary.json whole or not at all (a temporary file renamed into place)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SUMMARY
    _write_json(path, summary)
    return path


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


# the Python API ------------------------------------------------------------------------------------


def explain_images(
    model: torch.nn.Module,
    processor: Any,
    images: Any,
    out: str | Path,
    *,
    labels: int | str | Sequence[int | str] | None = None,
    label_column: str | None = None,
    image_column: str = "image",
    methods: str | Sequence[str] = ("transformer_attribution",),
    start_layer: int = 0,
    batch_size: int = 8,
    top_k: int = 5,
    cmap: str = "jet",
    alpha: float = 0.5,
    original_size: bool = False,
    progress: str = "auto",
    verbose: bool = False,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Explain many images into `out`, writing the files `hfrel explain` writes; returns the summary.

    `images`: image files and folders (a path or a list of them), or a dataset split: a `datasets`
    split or any sequence of dict examples whose `image_column` holds a PIL image (or a path, or a
    uint8 array). Examples are named `example-<index>`. What is explained: `labels` (classes for every
    image), else with `label_column` each example's own class from that column, else each image's
    predicted class; a label column is never read unless named.

    Launched as several processes (`accelerate launch`, `torchrun`), each explains its share and the
    main process writes summary.json and index.json. Images whose record.json matches this run's
    settings and input are reused, not recomputed. The model is used where it is (no moves).
    """
    out = Path(out)
    chosen = check_options(
        [methods] if isinstance(methods, str) else list(methods),
        top_k=top_k,
        batch_size=batch_size,
        alpha=alpha,
        cmap=cmap,
        out=out,
        names=API_NAMES,
    )
    if progress not in ("auto", "always", "never"):
        raise InputError(f"progress must be 'auto', 'always' or 'never'; got {progress!r}")
    if labels is not None and label_column is not None:
        raise LabelError(
            "pass labels (the same classes for every image) or label_column (each example's own class), not both"
        )
    config = getattr(model, "config", None)
    num_labels = int(getattr(config, "num_labels", 0) or 0)
    if num_labels < 1:
        raise InputError(f"model must be a transformers image classifier with config.num_labels; got {type(model)}")
    names = class_names(getattr(config, "id2label", None), num_labels)
    wanted = _fixed_labels(labels, names, num_labels)
    items, problems = items_from(images, image_column, label_column)
    if not items:
        if len(problems) == 1:
            raise InputError(problems[0].error)
        raise InputError("no image to explain: " + "; ".join(p.error for p in problems))
    devices = {p.device.type for p in model.parameters()} - {"meta"}
    processes, _ = join_processes(cpu=devices <= {"cpu"})
    settings = Settings(
        out=out,
        methods=chosen,
        labels=wanted,
        class_names=names,
        start_layer=start_layer,
        top_k=min(top_k, num_labels),
        cmap=cmap,
        alpha=alpha,
        original_size=original_size,
        label_column=label_column,
    )
    text = model_name or str(getattr(config, "name_or_path", "") or type(model).__name__)
    console = Console(verbose=verbose, progress=progress, processes=processes)
    outcome = explain_items(
        model,
        processor,
        items,
        problems,
        settings,
        model_text=text,
        batch_size=batch_size,
        processes=processes,
        console=console,
        option_names=API_NAMES,
    )
    if verbose and processes.main:
        console.write(closing_line(outcome, out), sys.stdout)
    return outcome.summary


def _fixed_labels(labels: Any, names: Mapping[int, str], num_labels: int) -> tuple[int, ...] | None:
    if labels is None:
        return None
    values = [labels] if isinstance(labels, (str, numbers.Integral)) else list(labels)
    if not values:
        raise LabelError("labels is empty: pass at least one class, or None for each image's predicted class")
    resolved = []
    for value in values:
        if isinstance(value, str):
            resolved.append(label_from_name(value, names, num_labels))
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
            resolved.append(check_index(int(value), num_labels))
        else:
            raise LabelError(f"labels must be class indices or class names; got {value!r}")
    return tuple(dict.fromkeys(resolved))


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
