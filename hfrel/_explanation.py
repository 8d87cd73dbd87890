"""The result of an explanation, and the map-to-picture step every method shares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    import matplotlib.figure


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map (last two axes) to [0, 1]; a constant map becomes all zeros, never NaN."""
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, (flat - low) / safe, torch.zeros_like(flat))
    return out.view_as(maps)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (..., gh, gw) maps to (..., H, W), as the paper's figures do."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    up = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size)


def to_heatmap(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Raw maps -> pictures: upsampled to `size`, then min-max normalised per map."""
    return normalise(upsample(maps.float(), size))


@dataclass(frozen=True)
class Explanation:
    """One method's explanation of a batch of B images.

    With one target per image (`label` None, one class, or B of them) the tensors are (B, ...);
    with K targets per image (`label` of shape (B, K)) they carry a target axis: (B, K, ...).
    `has_target_axis` says which, `num_targets` gives K, and `with_target_axis()` always gives (B, K, ...).
    """

    method: str
    relevance: torch.Tensor
    """Raw map on the patch grid, (B, gh, gw) or (B, K, gh, gw); for "lrp" on the pixels, (B[, K], H, W)."""
    heatmap: torch.Tensor
    """(B[, K], H, W): `relevance` upsampled bilinearly to the input size, min-max normalised per map to [0, 1]."""
    labels: torch.Tensor
    """(B,) or (B, K): the class explained by each map."""
    logits: torch.Tensor
    """(B, num_labels) the model's logits for the batch."""
    start_layer: int | None
    """First block combined (methods that roll out over blocks); None for single-block methods."""
    text_relevance: torch.Tensor | None = None
    """Image–text models: (B[, K], L) relevance of each token of the explained prompt; padding 0. Else None."""
    sizes: torch.Tensor | None = None
    """NaFlex models (Siglip2), whose images each keep their own patch grid: (B, 2) the (rows, cols) of each
    image's own map, top-left in `relevance` (patches; pixels for "lrp"); the rest is padding, exactly 0.
    None when every image's map fills `relevance`."""
    heatmap_sizes: torch.Tensor | None = None
    """NaFlex models: (B, 2) each image's own (height, width) in pixels, top-left in `heatmap` (upsampled and
    normalised over that region alone; the rest 0). None when every heatmap fills `heatmap`."""

    def image(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image `index`'s (relevance, heatmap), cropped to its own grid: NaFlex padding removed."""
        relevance, heatmap = self.relevance[index], self.heatmap[index]
        if self.sizes is not None and self.heatmap_sizes is not None:
            rows, cols = (int(v) for v in self.sizes[index])
            height, width = (int(v) for v in self.heatmap_sizes[index])
            relevance, heatmap = relevance[..., :rows, :cols], heatmap[..., :height, :width]
        return relevance, heatmap

    @property
    def has_target_axis(self) -> bool:
        """True when the tensors are (B, K, ...): the caller asked for K targets per image."""
        return self.labels.dim() == 2

    @property
    def num_targets(self) -> int:
        """K, the number of targets explained per image (1 without a target axis)."""
        return int(self.labels.shape[1]) if self.has_target_axis else 1

    def with_target_axis(self) -> Explanation:
        """The same explanation with the target axis present, (B, K, ...), K = 1 when it was absent."""
        if self.has_target_axis:
            return self
        text = None if self.text_relevance is None else self.text_relevance[:, None]
        return replace(
            self,
            relevance=self.relevance[:, None],
            heatmap=self.heatmap[:, None],
            labels=self.labels[:, None],
            text_relevance=text,
        )

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax of the logits, (B, num_labels); for SigLIP's prompts read `logits.sigmoid()` instead
        (`Explainer.prompt_probabilities` says which)."""
        return self.logits.float().softmax(dim=-1)

    def cpu(self) -> Explanation:
        """The same explanation with every tensor on the CPU."""
        return replace(
            self,
            relevance=self.relevance.cpu(),
            heatmap=self.heatmap.cpu(),
            labels=self.labels.cpu(),
            logits=self.logits.cpu(),
            text_relevance=None if self.text_relevance is None else self.text_relevance.cpu(),
            sizes=None if self.sizes is None else self.sizes.cpu(),
            heatmap_sizes=None if self.heatmap_sizes is None else self.heatmap_sizes.cpu(),
        )

    def plot(
        self,
        images: Any = None,
        *,
        index: int | None = None,
        id2label: dict[int, str] | None = None,
        cmap: str = "jet",
        alpha: float = 0.5,
    ) -> matplotlib.figure.Figure:
        """A matplotlib figure for notebooks: per image, the input (if given) and the heatmap overlaid on it.

        `images`: what the model saw, as a (B, 3, H, W) tensor in [0, 1] or PIL images / arrays;
        `index`: plot only this image of the batch.
        """
        from hfrel import viz

        return viz.plot_explanation(self, images, index=index, id2label=id2label, cmap=cmap, alpha=alpha)
