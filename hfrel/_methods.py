"""The methods: each a pure function of what the forward, gradient and relevance passes recorded.

A method declares what it needs (attention gradients of which blocks, which relevance rules, how
deep), so one explanation call runs each pass at most once for every method it was asked for.
Token maps are read from the rows of the tokens the head reads (`Evidence.readout`, a weight per
row: CLS alone for ViT) over the patch columns only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from hfrel._lrp import Relevance, Rules, widen


@dataclass
class Evidence:
    """The recorded tensors one call's methods read. Target axis T first where a tensor depends on the class."""

    probs: list[torch.Tensor]  # A_l per block, (B, H, N, N)
    grads: dict[int, torch.Tensor]  # block -> grad of the target logit w.r.t. A_l, (T, B, H, N, N)
    relevance: dict[str, Relevance]  # rule set -> what the relevance walk produced
    readout: torch.Tensor  # (B, N) weight of each token row in each image's map
    patches: slice  # the patch columns
    patch_weights: torch.Tensor | None  # (B, P) weights of a mean over each image's patches; None: 1/P each
    start_layer: int
    targets: int  # T


@dataclass(frozen=True)
class Method:
    """A relevance method and what it needs from the passes."""

    name: str
    summary: str
    source: str
    gradients: Literal["none", "last", "from_start"]
    rules: Rules | None
    relevance_to: Literal["none", "last", "from_start", "pixels"]
    uses_start_layer: bool
    compute: Callable[[Evidence], torch.Tensor]
    class_specific: bool = True


def _row(evidence: Evidence, matrix: torch.Tensor) -> torch.Tensor:
    """Each image's readout-weighted row of per-head matrices: (..., B, H, N, N) -> (..., B, H, N)."""
    readout = evidence.readout.to(device=matrix.device, dtype=matrix.dtype)
    return torch.einsum("bn,...bhnm->...bhm", readout, matrix)


def _patch_mean(evidence: Evidence, rows: torch.Tensor) -> torch.Tensor:
    """Mean over each image's patch columns (..., B, H, P) -> (..., B, H, 1); NaFlex padding excluded."""
    if evidence.patch_weights is None:
        return rows.mean(dim=-1, keepdim=True)
    weights = evidence.patch_weights.to(device=rows.device, dtype=rows.dtype).unsqueeze(-2)  # (B, 1, P)
    return (rows * weights).sum(dim=-1, keepdim=True)


def _times(rows: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Each image's row times its matrix: (..., B, N) x (..., B, N, N) -> (..., B, N)."""
    return (rows.unsqueeze(-2) @ matrices).squeeze(-2)


def _rollout_product(evidence: Evidence, contributions: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """The departure of readout . (I + C_{L-1}) ... (I + C_s) from the readout, over patch columns.

    Carried as a vector-matrix chain (O(N^2) per block). With `r` the readout and `d` the departure,
    each block does `d <- d + (r + d) C_l`: the readout itself is never added in, so a mean readout's
    uniform 1/P cannot round away a class-specific part many orders smaller (float32).
    """
    departure: torch.Tensor | None = None
    for layer in range(len(evidence.probs) - 1, evidence.start_layer - 1, -1):
        c = contributions(layer)
        readout = evidence.readout.to(device=c.device, dtype=c.dtype)
        if departure is None:
            departure = _times(readout, c)  # (..., B, N): the first block's term, d starting at 0
        else:
            departure = departure.to(c.device)
            departure = departure + _times(departure, c) + _times(readout, c)
    return departure[..., evidence.patches]  # type: ignore[index]


def _transformer_attribution(evidence: Evidence) -> torch.Tensor:
    relevance = evidence.relevance["cvpr"].attention

    def contribution(layer: int) -> torch.Tensor:
        return (evidence.grads[layer] * relevance[layer]).clamp(min=0).mean(dim=-3)

    return _rollout_product(evidence, contribution)


def _generic_attention(evidence: Evidence) -> torch.Tensor:
    def contribution(layer: int) -> torch.Tensor:
        return (evidence.grads[layer] * widen(evidence.probs[layer].detach())).clamp(min=0).mean(dim=-3)

    return _rollout_product(evidence, contribution)


def _rollout(evidence: Evidence) -> torch.Tensor:
    """Departure of readout . B_{L-1} ... B_s from the readout, with B_l = I + D_l (rows of D_l sum to 0)."""
    departure: torch.Tensor | None = None
    for layer in range(len(evidence.probs) - 1, evidence.start_layer - 1, -1):
        mixed = widen(evidence.probs[layer].detach()).mean(dim=1)
        eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = mixed + eye
        # B_l - I: the diagonal subtraction is exact, B_l's diagonal lying in [1/2, 1]
        change = mixed / mixed.sum(dim=-1, keepdim=True) - eye
        readout = evidence.readout.to(device=change.device, dtype=change.dtype)
        step = _times(readout, change)  # (B, N)
        if departure is not None:
            departure = departure.to(change.device)
            step = step + departure + _times(departure, change)
        departure = step
    return departure[..., evidence.patches].expand(evidence.targets, -1, -1)  # type: ignore[index]


def _attention(evidence: Evidence) -> torch.Tensor:
    probs = widen(evidence.probs[-1].detach())
    row = _row(evidence, probs.clamp(min=0)).mean(dim=-2)  # the row is linear: its head mean is the mean's row
    return row[..., evidence.patches].expand(evidence.targets, -1, -1)


def _attention_gradcam(evidence: Evidence) -> torch.Tensor:
    last = len(evidence.probs) - 1
    probs = widen(evidence.probs[last].detach())
    weights = _patch_mean(evidence, _row(evidence, evidence.grads[last])[..., evidence.patches])  # (T, B, H, 1)
    rows = _row(evidence, probs)[..., evidence.patches].to(weights.device)  # (B, H, P)
    return (weights * rows).mean(dim=-2).clamp(min=0)


def _partial_lrp(evidence: Evidence) -> torch.Tensor:
    relevance = evidence.relevance["classic"].attention[len(evidence.probs) - 1]
    return _row(evidence, relevance.clamp(min=0)).mean(dim=-2)[..., evidence.patches]


def _lrp(evidence: Evidence) -> torch.Tensor:
    return evidence.relevance["classic"].pixels


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "transformer_attribution",
            "LRP relevance of each attention map times its gradient, positive part, rolled out (the paper)",
            "Chefer, Gur & Wolf, CVPR 2021",
            gradients="from_start",
            rules="cvpr",
            relevance_to="from_start",
            uses_start_layer=True,
            compute=_transformer_attribution,
        ),
        Method(
            "generic_attention",
            "attention times its gradient, positive part, rolled out; no LRP",
            "Chefer, Gur & Wolf, ICCV 2021",
            gradients="from_start",
            rules=None,
            relevance_to="none",
            uses_start_layer=True,
            compute=_generic_attention,
        ),
        Method(
            "rollout",
            "attention averaged over heads plus identity, rows normalised, multiplied over blocks",
            "Abnar & Zuidema, ACL 2020",
            gradients="none",
            rules=None,
            relevance_to="none",
            uses_start_layer=True,
            compute=_rollout,
            class_specific=False,
        ),
        Method(
            "attention",
            "raw attention of the last block, averaged over heads",
            "baseline in Chefer et al., CVPR 2021",
            gradients="none",
            rules=None,
            relevance_to="none",
            uses_start_layer=False,
            compute=_attention,
            class_specific=False,
        ),
        Method(
            "attention_gradcam",
            "Grad-CAM on the last attention map: heads weighted by their mean gradient",
            "Selvaraju et al., ICCV 2017, as adapted in Chefer et al., CVPR 2021",
            gradients="last",
            rules=None,
            relevance_to="none",
            uses_start_layer=False,
            compute=_attention_gradcam,
        ),
        Method(
            "partial_lrp",
            "plain LRP relevance of the last attention map, positive part averaged over heads",
            "Voita et al., ACL 2019, as adapted in Chefer et al., CVPR 2021",
            gradients="none",
            rules="classic",
            relevance_to="last",
            uses_start_layer=False,
            compute=_partial_lrp,
        ),
        Method(
            "lrp",
            "plain LRP all the way to the pixels, summed over colour channels",
            "Binder et al., ICANN 2016, as adapted in Chefer et al., CVPR 2021",
            gradients="none",
            rules="classic",
            relevance_to="pixels",
            uses_start_layer=False,
            compute=_lrp,
        ),
    )
}


def methods() -> list[str]:
    """Names of the methods hfrel offers, the paper's own first."""
    return list(METHODS)


def describe_methods() -> dict[str, str]:
    """Method name -> one-line description (what the `hfrel methods` command prints)."""
    return {name: f"{m.summary} [{m.source}]" for name, m in METHODS.items()}
