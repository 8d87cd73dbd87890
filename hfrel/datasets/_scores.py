"""How a map sits on the objects of a scene: mean heat per object, and the pointing game (batched)."""

from __future__ import annotations

import torch

from hfrel._errors import InputError


def heat_on_objects(heatmaps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, K, K): mean of the map of target k over the pixels of object j.

    `heatmaps` (B, K, H, W), one map per target class; `masks` (B, K, H, W) bool, object j's pixels.
    """
    masks = masks.to(heatmaps.device, torch.float32)
    totals = torch.einsum("bkhw,bjhw->bkj", heatmaps.float(), masks)
    areas = masks.flatten(2).sum(dim=-1)  # (B, K)
    if (areas == 0).any():
        raise InputError("every object needs at least one mask pixel; an empty mask has no mean relevance")
    return totals / areas[:, None, :]


def own_and_other_heat(heatmaps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-object scenes: (B, 2) mean heat of each target's map on its own object, and on the other object.

    A map is class-specific where the first exceeds the second. `heatmaps`, `masks` as in `heat_on_objects`, K = 2.
    """
    heat = heat_on_objects(heatmaps, masks)  # (B, 2, 2): map of target k on object j
    return heat.diagonal(dim1=1, dim2=2), heat.flip(-1).diagonal(dim1=1, dim2=2)


def pointing_hits(heatmaps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: the maximum of the map of target k lies on object k (the first maximum on ties)."""
    peak = heatmaps.flatten(2).argmax(dim=-1, keepdim=True)  # (B, K, 1)
    return masks.to(heatmaps.device).flatten(2).gather(-1, peak)[..., 0]
