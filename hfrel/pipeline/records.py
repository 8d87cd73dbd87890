"""The run's records: record.json per image (kept for reruns), summary.json and index.json built from them.

record.json is written after every other file of its image, so it vouches only for finished work;
summary.json and index.json are built from records in any order (gathered from several processes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hfrel
from hfrel._images import Problem
from hfrel.pipeline.processes import Processes
from hfrel.pipeline.settings import Settings

if TYPE_CHECKING:
    from hfrel.pipeline.inputs import Item

SUMMARY = "summary.json"
INDEX = "index.json"
RECORD = "record.json"


def write_json(path: Path, value: Any) -> None:
    """Write a JSON file whole or not at all (a temporary file renamed into place)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def save_record(out: Path, record: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """record.json, written after every other file of the image, so it vouches only for finished work."""
    write_json(out / record["name"] / RECORD, {"fingerprint": fingerprint, "record": record})


def _listed_files(record: dict[str, Any]) -> list[str]:
    files = record["files"]
    listed = [files["panel"], files["maps"], *files.get("text", {}).values()]
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


@dataclass(frozen=True)
class Outcome:
    """A finished run: the summary (as written to summary.json), and this run's own bookkeeping."""

    summary: dict[str, Any]
    index: dict[str, Any]
    inputs: int  # images found plus inputs that could not be
    reused: int
    processes: Processes


def index_of_run(
    shards: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], processes: Processes
) -> dict[str, Any]:
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
    if settings.prompts is not None:
        summary["prompts"] = list(settings.prompts)
        summary["probabilities"] = settings.probabilities  # softmax over the prompts (CLIP) or a sigmoid each
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
    write_json(path, summary)
    return path
