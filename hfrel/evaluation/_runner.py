"""Explain a dataset with several methods, batch by batch, and score every map: the report behind
`hfrel evaluate`.

Per batch: the processor prepares the images (and, with nearest resampling, the masks in the same
geometry); one `explain` call gives every method's maps; the maps are scored against the masks; then
each map drives the positive and the negative perturbation test on the model, outside hfrel's hooks.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from hfrel._errors import HfrelError, InputError, UnsupportedModelError
from hfrel._explainer import attach
from hfrel._images import model_view
from hfrel._labels import check_index, label_from_name
from hfrel._methods import METHODS
from hfrel._options import check_start_layer, method_names
from hfrel.evaluation._data import EvaluationData, Sample, Skipped
from hfrel.evaluation._metrics import THRESHOLDS, LocalisationScores, Threshold, localisation_scores
from hfrel.evaluation._perturbation import STEPS, TESTS, normaliser, perturbation_auc, perturbation_hits

LabelSource = Literal["dataset", "predicted"]
LABEL_SOURCES: tuple[str, ...] = ("dataset", "predicted")


def evaluate(
    model: torch.nn.Module,
    processor: Any,
    data: EvaluationData,
    *,
    method: str | Sequence[str] | None = None,
    label: LabelSource = "dataset",
    start_layer: int = 0,
    threshold: Threshold = "mean",
    n: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Score `method` (a name or a list; default: all) on `data` with `model` and its `processor`; returns the report.

    `label`: the class each map explains, "dataset" (the item's label) or "predicted" (the model's arg-max,
    as `explain(label=None)`);
    perturbation accuracy is always top-1 against the dataset label. `threshold`: "mean" (the paper) or
    "otsu", for the segmentation test. `n`: stop after this many items have been evaluated. Items that
    cannot be read are skipped and listed in the report. Unlabelled data (ImageNet-segmentation) needs
    label="predicted" and gets no perturbation test. Values are in percent.
    """
    names = _check_options(method, label, threshold, n, batch_size)
    if not isinstance(data, EvaluationData):
        raise InputError(f"data must be a dataset such as hfrel.evaluation.FolderDataset; got {type(data).__name__}.")
    if label == "dataset" and not data.labelled:
        raise InputError(
            f"{data.source} has no class labels, so maps cannot explain the dataset label; use "
            f"label='predicted' (--label predicted), as the paper did on ImageNet-segmentation."
        )
    if len(data) == 0:
        raise InputError(f"{data.source} holds no usable item{_skipped_hint(data.skipped)}.")
    with attach(model) as explainer:  # fails early for a model hfrel cannot explain
        check_start_layer(start_layer, explainer.num_layers)
        if explainer.patch_layout == "naflex":
            raise UnsupportedModelError(
                f"evaluate does not score NaFlex models yet ({type(model).__name__}): its segmentation and "
                f"perturbation tests take every image of a batch at one size, as (B, C, H, W) pixels, and a NaFlex "
                f"model cuts each image into patches at its own aspect ratio. Explain this model with hfrel explain "
                f"(or hfrel.explain_images), or evaluate a fixed-size checkpoint of the family (e.g. SigLIP)."
            )

    skipped = list(data.skipped)
    scores: dict[str, list[LocalisationScores]] = {name: [] for name in names}
    hits: dict[str, dict[str, list[torch.Tensor]]] = {name: {test: [] for test in TESTS} for name in names}
    unperturbed: list[torch.Tensor] = []
    perturb = data.labelled
    normalise = normaliser(processor)
    parameter = next(model.parameters())

    def classify(inputs: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=inputs.to(device=parameter.device, dtype=parameter.dtype)).logits

    wanted = len(data) if n is None else min(n, len(data))
    done = 0
    with _eval_mode(model), _progress(wanted, progress) as bar:
        for batch, labels in _batches(data, model, wanted, batch_size, skipped):
            pixel_values = processor(images=[s.image for s in batch], return_tensors="pt")["pixel_values"]
            masks = _model_masks(processor, [s.mask for s in batch], tuple(pixel_values.shape[-2:]))
            with attach(model) as explainer:
                maps = explainer.explain(
                    pixel_values, label=labels if label == "dataset" else None, method=names, start_layer=start_layer
                )
            for name, explanation in maps.items():
                scores[name].append(localisation_scores(explanation.heatmap, masks, threshold))
            if perturb:
                images = model_view(pixel_values, processor).to(parameter.device)
                expected = labels.to(parameter.device)
                with torch.no_grad():
                    unperturbed.append((classify(normalise(images)).argmax(-1) == expected).cpu())
                for name, explanation in maps.items():
                    for test in TESTS:
                        found = perturbation_hits(
                            classify,
                            images,
                            explanation.heatmap,
                            expected,
                            test=test,  # type: ignore[arg-type]
                            normalise=normalise,
                            batch_size=batch_size * (len(STEPS) - 1),
                            unperturbed=False,
                        )
                        hits[name][test].append(found.cpu())
            done += len(batch)
            bar.update(len(batch))

    if done == 0:
        raise InputError(f"no item of {data.source} could be evaluated{_skipped_hint(skipped)}.")
    return _report(model, data, names, label, start_layer, threshold, done, scores, hits, unperturbed, skipped)


def _check_options(
    method: str | Sequence[str] | None, label: object, threshold: object, n: object, batch_size: object
) -> list[str]:
    names = list(METHODS) if method is None else list(method_names(method))
    if label not in LABEL_SOURCES:
        raise InputError(f"label must be 'dataset' or 'predicted'; got {label!r}.")
    if threshold not in THRESHOLDS:
        raise InputError(f"threshold must be one of {', '.join(THRESHOLDS)}; got {threshold!r}.")
    for option, value in (("n", n), ("batch_size", batch_size)):
        if value is None and option == "n":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{option} must be a positive integer; got {value!r}.")
    return names


def _skipped_hint(skipped: list[Skipped]) -> str:
    if not skipped:
        return ""
    shown = "; ".join(f"{s.item}: {s.reason}" for s in skipped[:3])
    more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
    return f"; skipped {shown}{more}"


def _batches(
    data: EvaluationData, model: torch.nn.Module, wanted: int, batch_size: int, skipped: list[Skipped]
) -> Iterator[tuple[list[Sample], torch.Tensor]]:
    """Batches of readable items with their class indices; unreadable ones go to `skipped`."""
    config = getattr(model, "config", None)
    num_labels = int(getattr(config, "num_labels", 0))
    id2label = getattr(config, "id2label", None)
    batch: list[Sample] = []
    labels: list[int] = []
    taken = 0
    for index in range(len(data)):
        if taken == wanted:
            break
        try:
            sample = data.load(index)
            label = -1 if sample.label is None else _class_index(sample.label, id2label, num_labels)
        except HfrelError as error:
            name, reason = data.name(index), str(error)
            skipped.append(Skipped(name, reason.removeprefix(f"{name}: ")))
            continue
        batch.append(sample)
        labels.append(label)
        taken += 1
        if len(batch) == batch_size:
            yield batch, torch.tensor(labels)
            batch, labels = [], []
    if batch:
        yield batch, torch.tensor(labels)


def _class_index(label: int | str, id2label: Any, num_labels: int) -> int:
    if isinstance(label, numbers.Integral) and not isinstance(label, bool):
        return check_index(int(label), num_labels)
    return label_from_name(str(label), id2label, num_labels)


def _model_masks(processor: Any, masks: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Masks in the geometry the processor gives images (its resize and crop), with nearest resampling so
    they stay binary (the paper resized its masks with nearest neighbours): (B, H, W) booleans."""
    from transformers.image_utils import PILImageResampling

    pictures = [Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).convert("RGB") for mask in masks]
    try:
        resized = processor(
            images=pictures,
            resample=PILImageResampling.NEAREST,
            do_normalize=False,
            do_rescale=False,
            return_tensors="pt",
        )["pixel_values"]
    except (TypeError, ValueError) as error:
        raise InputError(
            f"could not resize masks with {type(processor).__name__} ({error}); evaluation needs an image "
            f"processor that accepts resample=, do_normalize= and do_rescale= overrides."
        ) from error
    if tuple(resized.shape[-2:]) != size:
        raise InputError(f"masks came out {tuple(resized.shape[-2:])} but images {size}; cannot align them.")
    return resized[:, 0] > 127


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """No dropout in the perturbation forwards; every module's own mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="evaluate", unit="image", disable=not enabled)
    try:
        yield bar
    finally:
        bar.close()


def _report(
    model: torch.nn.Module,
    data: EvaluationData,
    names: list[str],
    label: str,
    start_layer: int,
    threshold: str,
    done: int,
    scores: dict[str, list[LocalisationScores]],
    hits: dict[str, dict[str, list[torch.Tensor]]],
    unperturbed: list[torch.Tensor],
    skipped: list[Skipped],
) -> dict[str, Any]:
    config = getattr(model, "config", None)
    results: dict[str, dict[str, Any]] = {}
    base = torch.cat(unperturbed).double().mean() if unperturbed else None
    for name in names:
        summary = LocalisationScores.cat(scores[name]).summary()
        entry: dict[str, Any] = {key: summary[key] for key in ("pixel_accuracy", "miou", "map", "pointing_game")}
        for test in TESTS:
            if base is None:
                entry[f"{test}_perturbation_auc"] = entry[f"{test}_perturbation_accuracy"] = None
                continue
            curve = torch.cat([base.view(1), torch.cat(hits[name][test]).double().mean(0)])
            entry[f"{test}_perturbation_auc"] = perturbation_auc(curve)
            entry[f"{test}_perturbation_accuracy"] = [100 * float(v) for v in curve]
        for key in ("iou_background", "iou_foreground", "relevance_mass", "rank_accuracy"):
            entry[key] = summary[key]
        results[name] = entry
    return {
        "n": done,
        "model": str(getattr(config, "_name_or_path", "") or type(model).__name__),
        "data": data.source,
        "label": label,
        "start_layer": start_layer,
        "threshold": threshold,
        "unperturbed_accuracy": None if base is None else 100 * float(base),
        "perturbation_steps": list(STEPS),
        "perturbation": "run" if base is not None else "not run: the data has no class labels to score accuracy",
        "methods": results,
        "skipped": [{"item": s.item, "reason": s.reason} for s in skipped],
    }
