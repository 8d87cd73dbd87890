"""The methods: each a pure function of what the forward, gradient and relevance passes recorded.

A method declares what it needs (attention gradients of which blocks, which relevance rules, how
deep), so one explanation call runs each pass at most once for every method it was asked for.
Token maps are read from the rows of the tokens the head reads (`Evidence.readout`, a weight per
row: CLS alone for ViT) over the patch columns only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from hfrel._lrp import Relevance, Rules, widen
from hfrel.models._swin import MergeLayout, WindowLayout


@dataclass
class Evidence:
    """The recorded tensors one call's methods read. Target axis T first where a tensor depends on the class.

    Token spaces: block l's attention matrices are in its own layout (`layouts[l]`: windows of its stage;
    None: the token sequence itself). Rows (the readout row and everything rolled out from it) live in a
    stage's raster token order and pass a patch merge (`merges`, keyed by the first block after it) on
    the way down; the final row is in the first stage's order, where `patches` are the patch columns.
    """

    probs: list[torch.Tensor]  # A_l per block, (B, H, N, N) or (B*windows, H, area, area)
    grads: dict[int, torch.Tensor]  # block -> grad of the target logit w.r.t. A_l, (T, ...) over A_l's shape
    relevance: dict[str, Relevance]  # rule set -> what the relevance walk produced
    readout: torch.Tensor  # (B, N_last) weight of each token row (of the last stage) in each image's map
    patches: slice  # the patch columns (of the first stage)
    patch_weights: torch.Tensor | None  # (B, P) weights of a mean over each image's patches; None: 1/P each
    start_layer: int
    targets: int  # T
    layouts: list[WindowLayout | None] = field(default_factory=list)
    merges: dict[int, MergeLayout] = field(default_factory=dict)
    probe_probs: torch.Tensor | None = None  # an attention-pooling head's A (B, H, 1, N): the last attention layer
    probe_grads: torch.Tensor | None = None  # its gradient (T, B, H, 1, N)


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


def _layout(evidence: Evidence, layer: int) -> WindowLayout | None:
    return evidence.layouts[layer] if evidence.layouts else None


def _times(evidence: Evidence, layer: int, row: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """`row @ M_l`: each image's row over block l's stage tokens (..., B, N) times its attention-layout
    matrix ((..., B, N, N), or per window (..., B*windows, area, area))."""
    layout = _layout(evidence, layer)
    if layout is None:
        return (row.unsqueeze(-2) @ matrix.to(row.device)).squeeze(-2)
    return layout.row_product(row, matrix.to(row.device))


def _start_row(evidence: Evidence, like: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    """The readout rows (..., B, N_last) in `like`'s dtype and device."""
    readout = evidence.readout.to(device=like.device, dtype=like.dtype)
    return readout.expand(*lead, *readout.shape)


def _lead(matrix: torch.Tensor) -> tuple[int, ...]:
    """Axes of a (..., B-layout, N, N) matrix before its batch axis, e.g. (T,) for (T, B, N, N)."""
    return tuple(matrix.shape[: matrix.dim() - 3])


def _patch_mean(evidence: Evidence, rows: torch.Tensor) -> torch.Tensor:
    """Mean over each image's patch columns (..., B, H, P) -> (..., B, H, 1); NaFlex padding excluded."""
    if evidence.patch_weights is None:
        return rows.mean(dim=-1, keepdim=True)
    weights = evidence.patch_weights.to(device=rows.device, dtype=rows.dtype).unsqueeze(-2)  # (B, 1, P)
    return (rows * weights).sum(dim=-1, keepdim=True)


def _merge_down(evidence: Evidence, row: torch.Tensor, above: int, rules: Rules | None) -> torch.Tensor:
    """Carry a row through the patch merge below block `above`: equal shares to the merged token's sources
    (`rules` None), or the shares the relevance walk of that rule set gave them (per sample and target)."""
    layout = evidence.merges[above]
    if rules is None:
        shares = layout.equal_shares(row.device)
    else:
        shares = layout.relevance_shares(evidence.relevance[rules].merges[above])  # type: ignore[index]
    return layout.carry(row, shares)


def _to_first_stage(evidence: Evidence, row: torch.Tensor, below: int, rules: Rules | None) -> torch.Tensor:
    """Carry a row from block `below`'s stage down through every merge at or below it, to the first stage."""
    for above in sorted((m for m in evidence.merges if m <= below), reverse=True):
        row = _merge_down(evidence, row, above, rules)
    return row


def _row(evidence: Evidence, layer: int, matrix: torch.Tensor, heads: bool = False) -> torch.Tensor:
    """Each image's readout-weighted row of block `layer`'s `matrix`: (..., B-layout, N, N) -> (..., B, N);
    with `heads`, per-head matrices (..., B-layout, H, N, N) -> (..., B, H, N)."""
    if heads:
        matrix = matrix.movedim(-3, -4)  # (..., H, B-layout, N, N)
    row = _times(evidence, layer, _start_row(evidence, matrix, _lead(matrix)), matrix)
    return row.movedim(-3, -2) if heads else row


def _probe_row(contribution: torch.Tensor) -> torch.Tensor:
    """The probe token's row after the probe layer: mean over heads of its (..., B, H, 1, N) contribution."""
    return contribution.mean(dim=-3).squeeze(-2)


def _departure_chain(
    evidence: Evidence,
    changes: Callable[[int], torch.Tensor],
    rules: Rules | None,
    lead: tuple[int, ...] | None,
    probe: torch.Tensor | None = None,
) -> torch.Tensor:
    """The departure of readout . (I + X_{L-1}) ... (I + X_s) from the readout, over patch columns.

    Carried as a vector-matrix chain (O(N^2) per block, block-sparse for windows). With `r` the readout
    and `d` the departure, each block does `d <- d + d X_l + r X_l`: the readout itself is never added
    in, so a mean readout's uniform 1/P cannot round away a class-specific part many orders smaller
    (float32). Below each patch merge both `r` and `d` pass to the sources (shares per `rules`); the
    result is the departure from the readout carried alone, i.e. from the same chain with every X = 0.
    `probe`: with an attention-pooling head, the probe token's row after its own layer (..., B, N): the
    readout is then the probe token, which no block reads, so the row starts as `probe` and all of it is
    departure.
    """
    readout: torch.Tensor | None = None
    departure: torch.Tensor | None = None
    for layer in range(len(evidence.probs) - 1, evidence.start_layer - 1, -1):
        x = changes(layer)
        if readout is None:
            readout = probe if probe is not None else _start_row(evidence, x, _lead(x) if lead is None else lead)
        readout = readout.to(x.device)
        step = _times(evidence, layer, readout, x)  # the first block's term, d starting at 0
        if departure is not None:
            departure = departure.to(x.device)
            step = departure + _times(evidence, layer, departure, x) + step
        departure = step
        if layer in evidence.merges:
            readout = _merge_down(evidence, readout, layer, rules)
            departure = _merge_down(evidence, departure, layer, rules)
    if probe is not None:
        departure = departure + probe.to(departure.device)  # type: ignore[operator]
    departure = _to_first_stage(evidence, departure, evidence.start_layer - 1, rules)  # type: ignore[arg-type]
    return departure[..., evidence.patches]


def _rollout_product(
    evidence: Evidence,
    contributions: Callable[[int], torch.Tensor],
    rules: Rules | None = None,
    probe: torch.Tensor | None = None,
) -> torch.Tensor:
    """The departure of readout . (I + C_{L-1}) ... (I + C_s) from the readout (see `_departure_chain`)."""
    return _departure_chain(evidence, contributions, rules, None, probe)


def _transformer_attribution(evidence: Evidence) -> torch.Tensor:
    relevance = evidence.relevance["cvpr"]

    def contribution(layer: int) -> torch.Tensor:
        return (evidence.grads[layer] * relevance.attention[layer]).clamp(min=0).mean(dim=-3)

    probe = None
    if evidence.probe_probs is not None:
        probe = _probe_row((evidence.probe_grads * relevance.probe).clamp(min=0))  # type: ignore[operator]
    return _rollout_product(evidence, contribution, "cvpr", probe)


def _generic_attention(evidence: Evidence) -> torch.Tensor:
    def contribution(layer: int) -> torch.Tensor:
        return (evidence.grads[layer] * widen(evidence.probs[layer].detach())).clamp(min=0).mean(dim=-3)

    probe = None
    if evidence.probe_probs is not None:
        probe = _probe_row((evidence.probe_grads * widen(evidence.probe_probs.detach())).clamp(min=0))  # type: ignore[operator]
    return _rollout_product(evidence, contribution, None, probe)


def _rollout(evidence: Evidence) -> torch.Tensor:
    """Departure of readout . B_{L-1} ... B_s from the readout, with B_l = I + D_l (rows of D_l sum to 0)."""

    def change(layer: int) -> torch.Tensor:
        mixed = widen(evidence.probs[layer].detach()).mean(dim=1)
        layout = _layout(evidence, layer)
        if layout is not None:  # columns of padding slots are not tokens of the stage: no share of the row sum
            mixed = layout.real_columns(mixed)
        eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = mixed + eye
        # B_l - I: the diagonal subtraction is exact, B_l's diagonal lying in [1/2, 1]
        return mixed / mixed.sum(dim=-1, keepdim=True) - eye

    probe = None
    if evidence.probe_probs is not None:  # the probe's row of (mean_h A_p + I), normalised: half on itself
        probe = widen(evidence.probe_probs.detach()).mean(dim=1).squeeze(-2) / 2
    return _departure_chain(evidence, change, None, (), probe).expand(evidence.targets, -1, -1)


def _last_columns(evidence: Evidence, row: torch.Tensor) -> torch.Tensor:
    """The patch columns of a row over the last stage's tokens (the first stage's, for a plain ViT)."""
    if evidence.merges:
        return row  # hierarchical models have no prefix tokens
    return row[..., evidence.patches]


def _attention(evidence: Evidence) -> torch.Tensor:
    if evidence.probe_probs is not None:  # the last attention layer is the probe's; its row is the readout
        row = widen(evidence.probe_probs.detach()).clamp(min=0).mean(dim=1).squeeze(-2)
        return row[..., evidence.patches].expand(evidence.targets, -1, -1)
    last = len(evidence.probs) - 1
    probs = widen(evidence.probs[last].detach())
    row = _row(evidence, last, probs.clamp(min=0).mean(dim=1))
    row = _to_first_stage(evidence, row, last, None)
    return row[..., evidence.patches].expand(evidence.targets, -1, -1)


def _attention_gradcam(evidence: Evidence) -> torch.Tensor:
    if evidence.probe_probs is not None:
        grads = evidence.probe_grads.squeeze(-2)[..., evidence.patches]  # type: ignore[union-attr]  (T, B, H, P)
        rows = widen(evidence.probe_probs.detach()).squeeze(-2)[..., evidence.patches]
        weights = _patch_mean(evidence, grads)  # (T, B, H, 1)
        return (weights * rows.to(weights.device)).mean(dim=-2).clamp(min=0)
    last = len(evidence.probs) - 1
    probs = widen(evidence.probs[last].detach())
    weights = _patch_mean(evidence, _last_columns(evidence, _row(evidence, last, evidence.grads[last], heads=True)))
    rows = _row(evidence, last, probs, heads=True).to(weights.device)  # (B, H, N)
    row = (weights * rows).mean(dim=-2).clamp(min=0)  # (T, B, N)
    row = _to_first_stage(evidence, row, last, None)
    return row[..., evidence.patches]


def _partial_lrp(evidence: Evidence) -> torch.Tensor:
    if evidence.probe_probs is not None:
        row = evidence.relevance["classic"].probe.clamp(min=0).mean(dim=-3).squeeze(-2)  # type: ignore[union-attr]
        return row[..., evidence.patches]
    last = len(evidence.probs) - 1
    relevance = evidence.relevance["classic"].attention[last]
    row = _row(evidence, last, relevance.clamp(min=0).mean(dim=-3))
    row = _to_first_stage(evidence, row, last, "classic")
    return row[..., evidence.patches]


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
