"""Drawing and writing one image's files: an overlay per (class, method), the paper's panel, maps.npz."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from PIL import Image

from hfrel._images import to_original
from hfrel.pipeline.inputs import Item
from hfrel.pipeline.records import RECORD
from hfrel.pipeline.settings import Settings


def write_image(
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
    text: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one image's overlays, panel and maps.npz; return its record (paths relative to the output).

    `text` (image–text models): each prompt's tokens and, per method, their relevance; drawn as one text
    figure per method and kept in the record."""
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
    text_files = {}
    if text is not None:
        for method, relevance in text["relevance"].items():
            titles = [f"{names[k]} ({float(probabilities[k]):.1%}), {method}" for k in range(len(text["tokens"]))]
            drawing = viz.text_figure(text["tokens"], relevance, titles)
            drawing.savefig(folder / f"text-{method}.png", dpi=100)
            text_files[method] = f"{item.name}/text-{method}.png"
            for k, values in enumerate(relevance):
                arrays[f"text_relevance_{method}_{k}"] = values.float().numpy()
    np.savez_compressed(folder / "maps.npz", **arrays)

    def entry(cls: int) -> dict[str, Any]:
        return {
            "index": cls,
            "label": names[cls],
            "logit": float(logits[cls]),
            "probability": float(probabilities[cls]),
        }

    record: dict[str, Any] = {
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
    if text is not None:
        record["prompts"] = [
            {
                **entry(k),
                "text": names[k],
                "tokens": text["tokens"][k],
                "token_relevance": {method: [float(v) for v in rel[k]] for method, rel in text["relevance"].items()},
            }
            for k in range(len(text["tokens"]))
        ]
        record["files"]["text"] = text_files
    return record


def _slug(name: str) -> str:
    """A class name as a safe, short file-name part ("tabby, tabby cat" -> "tabby-tabby-cat")."""
    return re.sub(r"[^0-9a-z]+", "-", name.casefold()).strip("-")[:40] or "class"
