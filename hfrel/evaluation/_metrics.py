"""Relevance maps scored against object masks: the paper's segmentation test and the localisation metrics.

Every function takes a batch of maps (B, h, w) and masks (B, H, W) and returns one value per image, so
a dataset is scored batch by batch and reduced once at the end (`LocalisationScores.summary`). Maps of
another size than the masks (a raw patch-grid map, say) are upsampled bilinearly first; every map is
min-max normalised per image, as the paper's scripts did, so `Explanation.heatmap` passes unchanged.
A constant map carries no information and is scored as a uniform one: all pixels tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch

from hfrel._errors import InputError
from hfrel._explanation import to_heatmap

Threshold = Literal["mean", "otsu"]
THRESHOLDS: tuple[str, ...] = ("mean", "otsu")


def prepare(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a batch and bring it to one shape: maps upsampled to the masks' size and min-max normalised
    (float32, on the maps' device), masks as booleans on the same device."""
    if not isinstance(maps, torch.Tensor) or not isinstance(masks, torch.Tensor):
        raise InputError(
            f"maps and masks must be torch tensors of shape (B, h, w) and (B, H, W); got "
            f"{type(maps).__name__} and {type(masks).__name__}."
        )
    if maps.dim() != 3 or masks.dim() != 3:
        raise InputError(
            f"maps must have shape (B, h, w) and masks (B, H, W), one per image; got {tuple(maps.shape)} and "
            f"{tuple(masks.shape)}. With K targets per image, score each target column separately."
        )
    if maps.shape[0] != masks.shape[0]:
        raise InputError(f"got {maps.shape[0]} maps for {masks.shape[0]} masks; pass one map per mask.")
    if maps.shape[0] == 0:
        raise InputError("no map to score (batch size 0).")
    if not maps.is_floating_point():
        raise InputError(f"maps must be floating point, got {maps.dtype}.")
    bad = (~torch.isfinite(maps)).flatten(1).any(-1).nonzero().flatten().tolist()
    if bad:
        raise InputError(f"maps {bad} contain NaN or infinite values; only finite maps can be scored.")
    if masks.is_floating_point() or masks.is_complex():
        raise InputError(f"masks must be boolean or integer (non-zero = object), got {masks.dtype}.")
    heat = to_heatmap(maps, tuple(masks.shape[-2:]))
    return heat, masks.to(device=heat.device) != 0


def _constant(heat: torch.Tensor) -> torch.Tensor:
    """(B,) True where a normalised map is constant (min-max normalisation made it all zeros)."""
    return heat.flatten(1).amax(-1) == 0


def _require_objects(masks: torch.Tensor, what: str) -> None:
    empty = (~masks.flatten(1).any(-1)).nonzero().flatten().tolist()
    if empty:
        raise InputError(f"masks {empty} have no object pixel; {what} needs at least one non-zero pixel per mask.")


def otsu_threshold(maps: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold of each map, (B,): foreground is `map > threshold`.

    Exact (no histogram): among the splits between two consecutive distinct values, the one that maximises
    the between-class variance w0 * w1 * (mu0 - mu1)^2 (the lowest such split on a tie). A constant map has
    no split; its threshold is its value, so nothing is foreground.
    """
    flat = maps.flatten(1).double()
    ordered = flat.sort(dim=-1).values
    count = ordered.shape[-1]
    if count < 2:
        return ordered[:, 0]
    below = ordered.cumsum(-1)[:, :-1]  # sum of the k lowest values, k = 1 .. N-1
    total = ordered.sum(-1, keepdim=True)
    k = torch.arange(1, count, device=flat.device, dtype=torch.float64)
    w0 = k / count
    between = w0 * (1 - w0) * (below / k - (total - below) / (count - k)) ** 2
    between = torch.where(ordered[:, :-1] < ordered[:, 1:], between, torch.full_like(between, -1.0))
    best = between.argmax(-1, keepdim=True)
    threshold = ordered.gather(-1, best).squeeze(-1)
    has_split = (ordered[:, :-1] < ordered[:, 1:]).any(-1)
    return torch.where(has_split, threshold, ordered[:, -1]).to(maps.dtype)


def foreground(maps: torch.Tensor, threshold: Threshold = "mean") -> torch.Tensor:
    """(B, H, W) booleans: where each min-max normalised map lies above its own mean (the paper), or above
    its Otsu threshold. Maps must already be at the masks' size (see `prepare`)."""
    if threshold == "mean":
        level = maps.flatten(1).mean(-1)
    elif threshold == "otsu":
        level = otsu_threshold(maps)
    else:
        raise InputError(f"threshold must be one of {', '.join(THRESHOLDS)}; got {threshold!r}.")
    return maps > level.view(-1, 1, 1)


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Average precision of each row, (B,) float64: scores (B, M) ranked against boolean targets (B, M).

    AP = sum over the distinct scores s, from the highest, of (recall(s) - recall(previous s)) * precision(s),
    where precision and recall count every item scored >= s: tied scores enter together (the step-wise
    definition of scikit-learn's `average_precision_score`, which the paper's scripts called).
    """
    if scores.shape != targets.shape or scores.dim() != 2:
        raise InputError(
            f"scores and targets must both be (B, M); got {tuple(scores.shape)} and {tuple(targets.shape)}."
        )
    truth = targets != 0
    positives = truth.sum(-1)
    if bool((positives == 0).any()):
        rows = (positives == 0).nonzero().flatten().tolist()
        raise InputError(f"rows {rows} have no positive target; average precision is undefined without one.")
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    ranked = scores.gather(-1, order)
    hits = truth.gather(-1, order).to(torch.float64)
    found = hits.cumsum(-1)
    seen = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=torch.float64).expand_as(found)
    starts = torch.ones_like(ranked, dtype=torch.bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    group = starts.long().cumsum(-1) - 1  # index of each item's tie group, in ranking order
    # cumulative counts are non-decreasing, so each group's last item holds its maximum
    found_at_end = torch.zeros_like(found).scatter_reduce(-1, group, found, "amax", include_self=False)
    seen_at_end = torch.ones_like(seen).scatter_reduce(-1, group, seen, "amax", include_self=False)
    precision = (found_at_end / seen_at_end).gather(-1, group)
    return (hits * precision).sum(-1) / positives.to(torch.float64)


def segmentation_average_precision(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The paper's per-image AP, (B,): the 2*H*W scores [map ; 1 - map] against [mask ; not mask].

    Inputs as `prepare` returns them. A constant map scores all 2*H*W items alike, so its AP is 1/2.
    """
    scores = torch.cat([maps.flatten(1), 1 - maps.flatten(1)], dim=-1)
    scores = torch.where(_constant(maps)[:, None], torch.zeros_like(scores), scores)
    targets = torch.cat([masks.flatten(1), ~masks.flatten(1)], dim=-1)
    return average_precision(scores, targets)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) float64 hit of each map's maximum on the object: the fraction of the pixels where the map takes its
    maximum that lie in the mask (1 or 0 when the maximum is unique; the expected hit when ties are broken
    at random). Inputs as `prepare` returns them; every mask needs an object pixel."""
    _require_objects(masks, "the pointing game")
    at_max = maps == maps.flatten(1).amax(-1).view(-1, 1, 1)
    return (at_max & masks).flatten(1).sum(-1).double() / at_max.flatten(1).sum(-1).double()


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) float64 share of each normalised map's total inside the mask; a constant map counts as uniform
    (the mask's share of the pixels). Inputs as `prepare` returns them."""
    flat = maps.flatten(1).double()
    inside = (flat * masks.flatten(1)).sum(-1)
    total = flat.sum(-1)
    area = masks.flatten(1).sum(-1).double() / masks.flatten(1).shape[-1]
    return torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)), area)


def rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) float64 relevance rank accuracy: with K the mask's pixel count, the fraction of the K most
    relevant pixels that lie in the mask. Pixels tied with the K-th value share the remaining places in
    proportion (the expected value when ties are broken at random). Inputs as `prepare` returns them."""
    _require_objects(masks, "rank accuracy")
    flat = maps.flatten(1)
    inside = masks.flatten(1)
    size = inside.sum(-1)
    kth = flat.sort(dim=-1, descending=True).values.gather(-1, (size - 1).unsqueeze(-1))
    above, tied = flat > kth, flat == kth
    count_above = above.sum(-1).double()
    inside_above = (above & inside).sum(-1).double()
    inside_tied = (tied & inside).sum(-1).double()
    share = (size.double() - count_above) * inside_tied / tied.sum(-1).double()
    return (inside_above + share) / size.double()


@dataclass(frozen=True)
class LocalisationScores:
    """Per-image scores of maps against masks; `summary()` reduces a dataset of them the paper's way.

    Pixel counts are kept (not ratios) because the paper accumulates pixel accuracy and the IoUs over the
    whole dataset before dividing; AP and the localisation metrics are averaged over images.
    """

    correct: torch.Tensor
    """(B,) pixels whose foreground/background prediction matches the mask."""
    pixels: torch.Tensor
    """(B,) pixels per image."""
    intersection: torch.Tensor
    """(B, 2) pixels predicted and true, for [background, foreground]."""
    union: torch.Tensor
    """(B, 2) pixels predicted or true, for [background, foreground]."""
    average_precision: torch.Tensor
    """(B,) AP of [map ; 1 - map] against [mask ; not mask]."""
    pointing_game: torch.Tensor
    """(B,) hit of the map's maximum on the object."""
    relevance_mass: torch.Tensor
    """(B,) share of the map's total inside the mask."""
    rank_accuracy: torch.Tensor
    """(B,) share of the |mask| most relevant pixels inside the mask."""

    def __len__(self) -> int:
        return int(self.correct.shape[0])

    @staticmethod
    def cat(parts: Sequence[LocalisationScores]) -> LocalisationScores:
        """The scores of several batches as one, on the CPU."""
        if not parts:
            raise InputError("no scores to combine.")
        return LocalisationScores(
            **{f.name: torch.cat([getattr(p, f.name).cpu() for p in parts]) for f in fields(LocalisationScores)}
        )

    def summary(self) -> dict[str, float]:
        """The dataset's numbers in percent: pixel_accuracy, iou_background, iou_foreground, miou, map,
        pointing_game, relevance_mass, rank_accuracy."""
        if len(self) == 0:
            raise InputError("no image scored; nothing to summarise.")
        intersection = self.intersection.double().sum(0)
        union = self.union.double().sum(0)
        iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
        return {
            "pixel_accuracy": 100 * float(self.correct.double().sum() / self.pixels.double().sum()),
            "iou_background": 100 * float(iou[0]),
            "iou_foreground": 100 * float(iou[1]),
            "miou": 100 * float(iou.mean()),
            "map": 100 * float(self.average_precision.double().mean()),
            "pointing_game": 100 * float(self.pointing_game.double().mean()),
            "relevance_mass": 100 * float(self.relevance_mass.double().mean()),
            "rank_accuracy": 100 * float(self.rank_accuracy.double().mean()),
        }


def localisation_scores(maps: torch.Tensor, masks: torch.Tensor, threshold: Threshold = "mean") -> LocalisationScores:
    """Score a batch of maps (B, h, w) against object masks (B, H, W), non-zero = object.

    Maps are upsampled bilinearly to the masks' size if needed and min-max normalised per image; the
    predicted foreground is where a map lies above its mean (`threshold="otsu"`: above its Otsu threshold).
    Every mask needs at least one object pixel. Runs on the maps' device.
    """
    heat, truth = prepare(maps, masks)
    _require_objects(truth, "localisation scoring")
    predicted = foreground(heat, threshold)
    classes = torch.stack([~truth, truth], dim=1).flatten(2)  # (B, 2, HW): [background, foreground]
    guessed = torch.stack([~predicted, predicted], dim=1).flatten(2)
    intersection = (classes & guessed).sum(-1)
    union = (classes | guessed).sum(-1)
    return LocalisationScores(
        correct=(predicted == truth).flatten(1).sum(-1),
        pixels=torch.full((heat.shape[0],), heat[0].numel(), dtype=torch.long, device=heat.device),
        intersection=intersection,
        union=union,
        average_precision=segmentation_average_precision(heat, truth),
        pointing_game=pointing_game(heat, truth),
        relevance_mass=relevance_mass(heat, truth),
        rank_accuracy=rank_accuracy(heat, truth),
    )


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of maps (last two axes), e.g. the same method in two precisions.

    Two constant maps agree (1); a constant map and a varying one do not (0). Computed in float64.
    """
    a, b = a.flatten(-2).double(), b.flatten(-2).double()
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    both_constant = (a.norm(dim=-1) == 0) & (b.norm(dim=-1) == 0)
    value = torch.where(norms > 0, (a * b).sum(-1) / norms.clamp(min=1e-300), torch.zeros_like(norms))
    return torch.where(both_constant, torch.ones_like(value), value)
