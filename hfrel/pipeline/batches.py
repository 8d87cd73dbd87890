"""The run itself: this process's share of the items, batch by batch, reusing finished records.

Per batch: the images go through the processor together, one `explain` call gives every method's
maps for every class asked for, and the writer draws and saves each image's files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

import hfrel
from hfrel._errors import HfrelError, InputError
from hfrel._html import write_index
from hfrel._images import Problem, check_naflex_processor, image_inputs, model_views, naflex_call_options
from hfrel._options import check_start_layer
from hfrel.pipeline.console import Console
from hfrel.pipeline.fingerprint import run_fingerprint
from hfrel.pipeline.inputs import FileSource, Item, Photo, example_identity
from hfrel.pipeline.processes import Processes
from hfrel.pipeline.records import (
    INDEX,
    SUMMARY,
    Outcome,
    index_of_run,
    reusable_record,
    save_record,
    summarise,
    write_json,
    write_summary,
)
from hfrel.pipeline.settings import Settings
from hfrel.pipeline.writer import write_image


@dataclass
class Loaded:
    """An item read and ready for the model, with the fingerprint its record will carry."""

    item: Item
    photo: Photo
    fingerprint: dict[str, Any]


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
    option_names: dict[str, str],
) -> Outcome:
    """Explain this process's share of `items` (reusing finished records), gather every process's
    records, and write summary.json and index.json on the main process.

    Raises InputError (on every process, after the summary is written) when nothing could be
    explained; when the only input fails, raises its error and writes nothing. A failure on one
    process reaches every process as the same ProcessFailedError (see `Processes.run_together`).
    """
    inputs = len(items) + len(problems)

    def share() -> dict[str, Any]:
        with hfrel.attach(model) as explainer:
            check_start_layer(settings.start_layer, explainer.num_layers, option=option_names["start_layer"])
            check_naflex_processor(processor, explainer.patch_layout, model_text)
            base = run_fingerprint(model, processor, settings)
            if processes.main:
                for problem in problems:  # reported once everything else is known to be usable
                    console.skipped(problem.error)
            mine = list(items[processes.rank :: processes.world])
            records, reused = _explain_share(explainer, processor, mine, settings, base, batch_size, console, inputs)
        return {"process": processes.rank, "records": records, "reused": reused}

    shards = processes.gather(processes.run_together(share))
    gathered = [record for each in shards for record in each["records"]]
    explained = sum(record["status"] == "ok" for record in gathered)
    if explained == 0 and inputs == 1:
        raise InputError(gathered[0]["error"])
    summary = summarise(settings, model_text, gathered, problems)
    index = index_of_run(shards, gathered, processes)
    if processes.main:
        write_summary(settings.out, summary)
        write_json(settings.out / INDEX, index)
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
                    fingerprint = {**base, "input": {"example": source.index, **example_identity(photo)}}
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


def explain_batch(
    explainer: hfrel.Explainer, processor: Any, batch: Sequence[Loaded], settings: Settings
) -> list[dict[str, Any]]:
    """Explain and draw one batch of read images; one "ok" record per image, in order.

    All images share one forward pass and one `explain` call (K classes per image as a (B, K) label
    table, or one class per image from a label column; all methods at once). With prompts (an
    image–text model) the processor reads the prompts with the images and every prompt is explained.
    NaFlex models (Siglip2) get the processor's patch mask and grids too; each image is drawn and stored
    on its own grid (its aspect ratio), the batch's padding left out.
    """
    photos = [entry.photo.image for entry in batch]
    label = None
    if settings.labels is not None:
        label = torch.tensor([settings.labels] * len(batch), dtype=torch.long)
    elif settings.label_column is not None:
        label = torch.tensor([entry.photo.label for entry in batch], dtype=torch.long)
    methods = list(settings.methods)
    if settings.prompts is not None:
        padding: dict[str, Any] = {"padding": True}
        if settings.text_padding is not None:
            padding = {"padding": "max_length", "max_length": settings.text_padding, "truncation": True}
        options = {**padding, **naflex_call_options(processor)}
        inputs = dict(processor(text=list(settings.prompts), images=photos, return_tensors="pt", **options))
        image_processor = getattr(processor, "image_processor", processor)
    else:  # NaFlex (Siglip2): the patch mask and each image's grid travel with the patches
        inputs = image_inputs(processor(images=photos, return_tensors="pt"), explainer.patch_layout)
        image_processor = processor
    results = explainer.explain(**inputs, label=label, method=methods, start_layer=settings.start_layer)
    maps = {name: exp.cpu().with_target_axis() for name, exp in results.items()}
    first = maps[settings.methods[0]]
    targets = first.labels  # (B, K)
    logits = first.logits.float()
    probabilities = logits.sigmoid() if settings.probabilities == "sigmoid" else logits.softmax(dim=-1)
    top = probabilities.topk(settings.top_k, dim=-1)
    views = model_views(inputs, image_processor)  # NaFlex: each image at its own size
    texts: list[dict[str, Any] | None] = [None] * len(batch)
    if settings.prompts is not None:
        texts = [
            _prompt_tokens(processor, inputs, {name: m.text_relevance[b] for name, m in maps.items()})
            for b in range(len(batch))
        ]
    return [
        write_image(
            entry.item,
            entry.photo.image,
            views[b],
            {name: m.image(b) for name, m in maps.items()},  # NaFlex: the image's own grid, no padding
            targets[b],
            logits[b],
            probabilities[b],
            top.indices[b],
            image_processor,
            settings,
            texts[b],
        )
        for b, entry in enumerate(batch)
    ]


def _prompt_tokens(processor: Any, inputs: Any, relevance: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Each prompt's tokens (padding left out) and, per method, their relevance: (K, L) maps of one image."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    tokens, kept = [], []
    for k in range(ids.shape[0]):
        real = mask[k].bool() if mask is not None else torch.ones(ids.shape[1], dtype=torch.bool)
        kept.append(real)
        tokens.append(tokenizer.convert_ids_to_tokens(ids[k][real].tolist()))
    return {
        "tokens": tokens,
        "relevance": {name: [maps[k][kept[k]] for k in range(ids.shape[0])] for name, maps in relevance.items()},
    }
