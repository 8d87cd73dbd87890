"""Relevance propagation (LRP): the rules of docs/methods.md and the walk from the logits down.

The walk reads the tape of one forward pass and each module's own weights; it never runs the model
again. Relevance tensors carry a leading target axis T (one relevance per requested class), so K
classes of the same images share every record and every rule's denominator.

Rule sets: "cvpr" is Chefer et al. (CVPR 2021); "classic" is the plain LRP baseline they compare with.
Arithmetic runs in float32 (or float64 for float64 models) whatever the model's dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from accelerate.utils import align_module_device, has_offloaded_params
from torch import nn
from torch.nn import functional as F

from hfrel._capture import LayerRecord, MergeRecord, Tape
from hfrel.models._spec import Block, Merge, ResolvedModel

Rules = Literal["cvpr", "classic"]
EPS = 1e-9


def safe_inverse(b: torch.Tensor) -> torch.Tensor:
    """1 / (b + 1e-9), and 0 where b == 0: the reciprocal the reference's safe division uses.

    Computed once per denominator and shared by every relevance divided by it (all targets).
    """
    inverse = (b + EPS).reciprocal_()
    # b == -1e-9 exactly makes b + 1e-9 == +0 and the reciprocal +inf (nothing else can: b + 1e-9 is
    # +0 or at least a float's spacing near 1e-9 away from 0); the reference divides by 1e-9 there
    torch.nan_to_num_(inverse, nan=float("nan"), posinf=1.0 / EPS, neginf=float("-inf"))
    return inverse.masked_fill_(b == 0, 0.0)


def _nonnegative_inverse(z: torch.Tensor) -> torch.Tensor:
    """1 / (z + 1e-9) for a denominator z >= 0, in place; where z == 0 it is 1e9, not sdiv's 0.

    Only for the linear rules: there z_j = sum_i x_i W_ji over terms that are all >= 0, so z_j == 0
    means every term is 0, and everything s_j = R_j / (z_j + 1e-9) reaches is multiplied by such a
    zero (x_i or W_ji) on the way back: the result is the same exact 0 without masking z == 0.
    """
    return z.add_(EPS).reciprocal_()


def sdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / (b + 1e-9), and 0 where b == 0: the reference's safe division (up to one rounding)."""
    return a * safe_inverse(b)


def widen(t: torch.Tensor) -> torch.Tensor:
    """The tensor in the relevance arithmetic's precision (float32, or float64 if already so)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _sample_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over one sample's elements (the last two axes: tokens, features)."""
    return t.sum(dim=(-2, -1), keepdim=True)


def linear_rule(
    x: torch.Tensor,
    weight: torch.Tensor,
    relevance: torch.Tensor,
    rules: Rules,
    product: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relevance of the input of `x @ weight.T` (bias ignored), positive and negative parts apart.

    x: (..., Din); relevance: (T, ..., Dout) or (..., Dout). The denominators depend on x alone, so
    they are computed once for all T targets. `product`: `x @ weight.T` as the forward pass computed
    it (bias removed), if it is full precision; the CVPR denominator then takes one matrix product
    instead of two, since x+ W+ + x- W- = (x W + |x| |W|) / 2.
    """
    x = widen(x)
    weight = widen(weight).to(x.device)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    if rules == "cvpr" and product is not None and product.dtype == x.dtype:
        # 2z = |x| |W|^T + x W^T, clamped at 0 against rounding (z >= 0); 1 / (2z + 2e-9) is half of
        # sdiv's reciprocal, and the doubled weights below make up the factor 2 exactly
        twice = (x.abs() @ weight.abs().T).add_(product.to(x.device)).clamp_(min=0)
        s_pos = s_neg = relevance * twice.add_(2 * EPS).reciprocal_()
        weight = weight * 2
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    else:
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        if rules == "cvpr":
            z = x_pos @ w_pos.T
            z += x_neg @ w_neg.T
            s_pos = s_neg = relevance * _nonnegative_inverse(z)
        else:
            s_pos = relevance * _nonnegative_inverse(x_pos @ w_pos.T)
            s_neg = relevance * _nonnegative_inverse(x_neg @ w_neg.T)
    out = (s_pos @ w_pos).mul_(x_pos)
    return out.addcmul_(s_neg @ w_neg, x_neg)


def residual_rule(
    a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor, rules: Rules
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the relevance of `a + b` between its two terms (z-rule; "cvpr" then rescales per sample)."""
    s = relevance * safe_inverse(a + b)
    r_a, r_b = s * a, s.mul_(b)
    if rules == "cvpr":
        sum_a, sum_b, total = _sample_sum(r_a), _sample_sum(r_b), _sample_sum(relevance)
        both = sum_a.abs() + sum_b.abs()
        r_a.mul_(sdiv(sdiv(sum_a.abs(), both) * total, sum_a))
        r_b.mul_(sdiv(sdiv(sum_b.abs(), both) * total, sum_b))
    return r_a, r_b


def fork_rule(x: torch.Tensor, r_skip: torch.Tensor, r_branch: torch.Tensor) -> torch.Tensor:
    """Relevance of a tensor that fed both the residual skip and a branch: x * sdiv(R_skip + R_branch, x).

    The factor x / (x + 1e-9) depends on x alone, so it is formed once for all targets; where x == 0 it
    is 0 without a mask (sdiv's 0 times x is the same 0).
    """
    ratio = (x + EPS).reciprocal_()
    torch.nan_to_num_(ratio, nan=float("nan"), posinf=1.0 / EPS, neginf=float("-inf"))  # x == -1e-9: as sdiv
    return (r_skip + r_branch).mul_(ratio.mul_(x))


def matmul_rule(
    left: torch.Tensor, right: torch.Tensor, product: torch.Tensor, relevance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance of both factors of `left @ right` (gradient times input), each halved."""
    s = relevance * safe_inverse(product)
    r_left = (s @ right.transpose(-1, -2)).mul_(left).mul_(0.5)
    r_right = (left.transpose(-1, -2) @ s).mul_(right).mul_(0.5)
    return r_left, r_right


def bounded_conv_rule(
    x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """The z^B rule for the input convolution: pixels bounded by each sample's min and max."""
    x = widen(x)
    weight = widen(weight).to(x.device)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    low = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
    high = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)

    def conv(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, stride=stride, padding=padding)

    def back(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        flat = s.reshape(-1, *s.shape[-3:])
        size = (flat.shape[0], *x.shape[1:])
        grad = torch.nn.grad.conv2d_input(size, w, flat, stride=stride, padding=padding)
        return grad.reshape(*s.shape[:-3], *grad.shape[-3:])

    z = conv(x, weight) - conv(low, w_pos) - conv(high, w_neg) + EPS
    s = relevance / z
    return x * back(s, weight) - low * back(s, w_pos) - high * back(s, w_neg)


def bounded_linear_rule(
    x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """The z^B rule for a linear patch embedding (NaFlex): inputs bounded by `low` and `high` (broadcast to x).

    x: (B, P, F) flattened patches; relevance: (T, B, P, D). Bias ignored, as in the convolution's rule.
    """
    x = widen(x)
    weight = widen(weight).to(x.device)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    low, high = low.expand_as(x), high.expand_as(x)
    z = x @ weight.T - low @ w_pos.T - high @ w_neg.T + EPS
    s = relevance / z
    return x * (s @ weight) - low * (s @ w_pos) - high * (s @ w_neg)


class _Weights:
    """Makes weights that accelerate offloads (meta tensors between calls) real while rules read them."""

    def __init__(self, model: nn.Module) -> None:
        self._parent = {child: parent for parent in model.modules() for child in parent.children()}
        self._offloading = any(has_offloaded_params(m) for m in model.modules())

    @contextlib.contextmanager
    def loaded(self, *modules: nn.Module) -> Iterator[None]:
        if not self._offloading:
            yield
            return
        owners: dict[int, nn.Module] = {}
        for module in modules:
            node: nn.Module | None = module
            while node is not None:  # hooks on the module or a block above it
                if has_offloaded_params(node):
                    owners[id(node)] = node
                node = self._parent.get(node)
            for inner in module.modules():  # hooks on leaves below it
                if has_offloaded_params(inner):
                    owners[id(inner)] = inner
        with contextlib.ExitStack() as stack:
            for owner in owners.values():
                stack.enter_context(align_module_device(owner))
            yield


@dataclass
class Relevance:
    """What one relevance walk produced."""

    attention: dict[int, torch.Tensor]  # block index -> R_A (T, B, H, N, N), after halving
    pixels: torch.Tensor | None = None  # (T, B, H, W), summed over channels; a text tower: (T, B, N) tokens
    totals: dict[int, torch.Tensor] | None = None  # block index -> total relevance of its input (T, B)
    merges: dict[int, torch.Tensor] | None = None
    """Hierarchical models: index of the first block after a merge -> relevance of each merge source (T, B, N_s)."""
    probe: torch.Tensor | None = None  # an attention-pooling head's R_A (T, B, H, 1, N), after halving
    probe_query: torch.Tensor | None = None  # the relevance left on the probe's query (T, B): a learned constant


def _head_relevance(
    resolved: ResolvedModel, tape: Tape, relevance: torch.Tensor, rules: Rules
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Relevance on the pooled sequence (T, B, N, D) from relevance on the head's output (T, B, C).

    The head's output is the logits (one-hot relevance) for classifiers, a tower's embedding for image–text
    models; a model without head linears takes `relevance` on its pooled features. For an attention-pooling
    head, also returns its R_A and the query's share.
    """
    seq = widen(tape.pooled_from)
    if not resolved.heads:
        r_features = relevance
    elif resolved.pooling == "cls+dist":
        features = torch.cat([widen(t) for t in tape.head_in], dim=-1)
        weight = torch.cat([h.weight.to(seq.device) for h in resolved.heads], dim=1)
        r_features = linear_rule(features, weight, relevance.to(features.device), rules)
    else:
        features, weight = widen(tape.head_in[0]), resolved.heads[0].weight
        r_features = linear_rule(features, weight, relevance.to(features.device), rules)
    if resolved.pooling == "probe":
        return _probe_relevance(resolved, tape.probe, r_features.to(seq.device), rules)  # type: ignore[arg-type]
    width = seq.shape[-1]
    r_seq = torch.zeros(relevance.shape[0], *seq.shape, dtype=seq.dtype, device=seq.device)
    prefix = resolved.prefix_tokens
    if resolved.pooling == "cls":
        r_seq[..., 0, :] = seq[:, 0] * sdiv(r_features.to(seq.device), seq[:, 0])
    elif resolved.pooling == "token":
        rows = torch.arange(seq.shape[0], device=seq.device)
        chosen = seq[rows, tape.positions.to(seq.device)]  # type: ignore[union-attr]
        r_seq[:, rows, tape.positions.to(seq.device)] = chosen * sdiv(r_features.to(seq.device), chosen)  # type: ignore[union-attr]
    elif resolved.pooling == "cls+dist":
        for token in (0, 1):
            part = r_features[..., token * width : (token + 1) * width].to(seq.device)
            r_seq[..., token, :] = seq[:, token] * sdiv(part, seq[:, token])
    else:
        patches = seq[:, prefix:]
        r_mean = r_features[..., -width:].to(seq.device)
        mask = tape.layout.token_mask(patches.shape[1]) if tape.layout is not None else None
        if mask is None:
            mean = patches.mean(dim=1)
            r_seq[..., prefix:, :] = patches * (sdiv(r_mean, mean) / patches.shape[1]).unsqueeze(-2)
        else:  # NaFlex: the mean of each image's real patches, padding weighted 0
            weights = (mask / mask.sum(dim=-1, keepdim=True)).to(seq).unsqueeze(-1)  # (B, P, 1)
            mean = (patches * weights).sum(dim=1)
            r_seq[..., prefix:, :] = patches * weights * sdiv(r_mean, mean).unsqueeze(-2)
        if resolved.pooling == "cls+mean":
            r_cls = r_features[..., :width].to(seq.device)
            r_seq[..., 0, :] = seq[:, 0] * sdiv(r_cls, seq[:, 0])
    return r_seq, None, None


def _probe_relevance(
    resolved: ResolvedModel, record: LayerRecord, relevance: torch.Tensor, rules: Rules
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An attention-pooling head backwards, from its pooled output (T, B, D) to the hidden states (T, B, N, D).

    `pooled = a + MLP(LN(a))`, `a = out_proj(A v)`, `A = softmax(q k^T)` with q from the learned probe:
    the block rules (residual, linear, products), with no skip around the attention. The query's half of
    R_A stays on the probe (a constant); returned as its total (T, B) so conservation can be checked.
    """
    probe = resolved.probe
    attention = probe.attention  # type: ignore[union-attr]
    a = widen(record.out_out)
    r = relevance.unsqueeze(-2).to(a.device)
    r_mlp, r_skip = residual_rule(widen(record.mlp_out), a, r, rules)
    r_hidden = linear_rule(
        record.mlp_h,
        probe.mlp_out.weight,
        r_mlp,
        rules,
        _forward_product(record.mlp_out, probe.mlp_out),  # type: ignore[union-attr]
    )
    r_norm = linear_rule(record.mlp_x, probe.mlp_in.weight, r_hidden, rules)  # type: ignore[union-attr]
    r_a = fork_rule(a, r_skip, r_norm)
    r_context = linear_rule(
        record.out_in, attention.out_proj.weight, r_a, rules, _forward_product(record.out_out, attention.out_proj)
    )
    heads = attention.num_heads
    r_context = r_context.reshape(*r_context.shape[:-1], heads, -1).transpose(-3, -2)  # (T, B, H, 1, d)
    probs, v, q, k = (widen(t) for t in (record.probs.detach(), record.v, record.q, record.k))  # type: ignore[union-attr]
    context = widen(record.out_in).reshape(*record.out_in.shape[:-1], heads, -1).transpose(-3, -2)  # type: ignore[union-attr]
    r_probs, r_v = matmul_rule(probs, v, context, r_context)
    r_q, r_k = matmul_rule(q, k.transpose(-1, -2), q @ k.transpose(-1, -2), r_probs)
    r_k = r_k.transpose(-1, -2)
    tokens = record.attn_in.shape[1]  # type: ignore[union-attr]
    r_kv = torch.cat([t.transpose(-3, -2).reshape(*t.shape[:-3], tokens, -1) for t in (r_k, r_v)], dim=-1)
    width = attention.embed_dim
    weight = attention.in_proj_weight[width:]
    product = None
    outputs = torch.cat([record.projections["k"], record.projections["v"]], dim=-1)
    if outputs.dtype in (torch.float32, torch.float64):
        bias = attention.in_proj_bias
        product = outputs.detach() - (0 if bias is None else bias[width:].detach().to(outputs.dtype))
    r_seq = linear_rule(record.attn_in, weight, r_kv, rules, product)
    return r_seq, r_probs, r_q.sum(dim=(-3, -2, -1))


def hidden_relevance(hidden: torch.Tensor, grad: torch.Tensor, rules: Rules) -> torch.Tensor:
    """Relevance of the last hidden states (T, B, N, D) for any target: hfrel's extension (docs/methods.md).

    The target is read as a linear head over every hidden element with weights grad = d target / d hidden
    (one output, relevance 1), and the rule set's linear rule splits that 1 over the contributions
    hidden x grad. For a classifier's own logit this is exactly the head rule (the gradient is the head's row).
    """
    h = widen(hidden).to(grad.device)
    g = widen(grad)
    h_pos, h_neg, g_pos, g_neg = h.clamp(min=0), h.clamp(max=0), g.clamp(min=0), g.clamp(max=0)
    positive, negative = h_pos * g_pos, h_neg * g_neg  # the two same-sign parts of hidden x grad
    if rules == "cvpr":
        total = safe_inverse(_sample_sum(positive) + _sample_sum(negative))
        return (positive + negative) * total
    return positive * safe_inverse(_sample_sum(positive)) + negative * safe_inverse(_sample_sum(negative))


def _forward_product(output: torch.Tensor | None, *linears: nn.Linear) -> torch.Tensor | None:
    """`x @ W.T` recovered from the recorded output of one linear (or of several sharing x, concatenated),
    bias subtracted; None when the output is not full precision (rounded half-precision outputs would
    make poor denominators)."""
    if output is None or output.dtype not in (torch.float32, torch.float64):
        return None
    biases = [
        torch.zeros(linear.out_features, dtype=output.dtype, device=output.device)
        if linear.bias is None
        else linear.bias.detach().to(output.device, output.dtype)
        for linear in linears
    ]
    return output.detach() - torch.cat(biases)


def _scaled(value: torch.Tensor, scale: torch.Tensor | float | None) -> torch.Tensor:
    if scale is None:
        return value
    if isinstance(scale, torch.Tensor):
        scale = widen(scale.detach()).to(value.device)
    return value * scale


def _live_rows(relevance: torch.Tensor) -> torch.Tensor | None:
    """The token rows of relevance (..., N, D) that are not all zero, if they are at most half of them; else None.

    Relevance enters the top block only at the tokens the head reads (CLS, say): every token-wise rule (residual
    adds, norms, MLP, output linear) then maps the other rows' exact zeros to exact zeros, so the block's work
    on them can be skipped without changing a digit (the sums the rules take see only zeros there).
    """
    live = relevance.ne(0).reshape(-1, *relevance.shape[-2:]).any(dim=0).any(dim=-1)
    count = int(live.sum())
    if count == 0 or count * 2 > live.numel():  # no relevance at all: the plain walk makes its zeros
        return None
    return live.nonzero().squeeze(-1)


def _block_relevance(
    block: Block,
    record: LayerRecord,
    relevance: torch.Tensor,
    rules: Rules,
    need_input: bool,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One block backwards: returns R_A (after halving) and, if `need_input`, the relevance of the block input.

    Residual stream, norms and MLP live in the stage's raster token order; the attention (q/k/v, A, the
    output linear) in the block's window order where `record.layout` says so. Window partition, shift
    and padding are a permutation (plus zeros), so relevance moves with the tokens between the two.
    `rows` (blocks without windows): the only tokens whose relevance is not zero (`_live_rows`); the token-wise
    rules, the output linear and the rows of A then run on those tokens alone.
    """
    layout = record.layout

    def to_tokens(t: torch.Tensor) -> torch.Tensor:
        return t if layout is None else layout.to_tokens(t)

    def to_windows(t: torch.Tensor) -> torch.Tensor:
        return t if layout is None else layout.to_windows(t)

    def pick(t: torch.Tensor | None) -> torch.Tensor | None:
        """The live rows of a (B, N, ...) record."""
        return t if rows is None or t is None else t[:, rows]

    def spread(t: torch.Tensor) -> torch.Tensor:
        """Relevance (..., n, F) on the live rows back on all N tokens (..., N, F), zeros elsewhere."""
        if rows is None:
            return t
        full = t.new_zeros(*t.shape[:-2], tokens, t.shape[-1])
        full[..., rows, :] = t
        return full

    x = widen(record.x)
    tokens = x.shape[-2]
    relevance = relevance.to(x.device)
    if rows is not None:
        rows = rows.to(x.device)
        relevance = relevance[..., rows, :]
    scale_attn, scale_mlp = block.scales()
    if block.branch_norms is not None:  # post-norm: each branch ends in a norm, which passes relevance
        attn_branch, mlp_branch = widen(record.attn_branch), widen(record.mlp_branch)
    else:
        attn_branch = _scaled(to_tokens(widen(record.out_out)), scale_attn)
        mlp_branch = _scaled(widen(record.mlp_out), scale_mlp)
    mid = x + attn_branch  # the stream between the two residual adds

    # MLP half: residual add, second linear, activation (passes), first linear(s), norm (passes), fork.
    r_mlp, r_mid_skip = residual_rule(pick(mlp_branch), pick(mid), relevance, rules)
    hidden = pick(record.mlp_h)
    if hidden is None:  # the tape kept the first linear's output instead; the activation rebuilds it exactly
        hidden = block.mlp_act.forward(pick(record.mlp_pre))  # type: ignore[union-attr]
    product = _forward_product(pick(record.mlp_out), block.mlp_out)
    r_hidden = linear_rule(hidden, block.mlp_out.weight, r_mlp, rules, product)
    if block.mlp_gate is not None:
        # act(gate) * up: a product of two factors, treated like the attention products (halved each).
        r_hidden = widen(hidden) * sdiv(r_hidden, widen(hidden)) / 2
        weight = torch.cat([block.mlp_gate.weight, block.mlp_in.weight], dim=0)
        r_hidden = torch.cat([r_hidden, r_hidden], dim=-1)
    else:
        weight = block.mlp_in.weight
    product = _forward_product(pick(record.mlp_pre), block.mlp_in)
    r_mlp_in = linear_rule(pick(record.mlp_x), weight, r_hidden, rules, product)  # type: ignore[arg-type]
    r_mid = fork_rule(pick(mid), r_mid_skip, r_mlp_in)  # type: ignore[arg-type]

    # Attention half: residual add, output linear, A v, (softmax passes) q k^T, q/k/v linears, fork.
    r_attn, r_x_skip = residual_rule(pick(attn_branch), pick(x), r_mid, rules)  # type: ignore[arg-type]
    r_attn = to_windows(r_attn)
    product = _forward_product(pick(record.out_out), block.out)
    r_context = linear_rule(pick(record.out_in), block.out.weight, r_attn, rules, product)  # type: ignore[arg-type]
    r_context = r_context.reshape(*r_context.shape[:-1], block.num_heads, -1).transpose(-3, -2)
    probs, v = widen(record.probs.detach()), widen(record.v)
    # A_l v is the output linear's input, heads side by side: read it back rather than keep a copy
    out_in = widen(pick(record.out_in))  # type: ignore[arg-type]
    context = out_in.reshape(*out_in.shape[:-1], block.num_heads, -1).transpose(-3, -2)
    if rows is not None:
        probs = probs[..., rows, :]
    r_rows, r_v = matmul_rule(probs, v, context, r_context)  # R_A on the live rows (all rows if `rows` is None)
    r_probs = spread(r_rows)
    if not need_input:
        return r_probs, None
    q, k = widen(record.q), widen(record.k)
    if block.cosine_scores:  # S = scale * q^ k^T: the normalisations pass relevance, like the norms
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    if rows is not None:
        q = q[..., rows, :]
    r_q, r_k = matmul_rule(q, k.transpose(-1, -2), q @ k.transpose(-1, -2), r_rows)
    r_q, r_k = spread(r_q), r_k.transpose(-1, -2)
    n = r_k.shape[-2]
    r_qkv = torch.cat([t.transpose(-3, -2).reshape(*t.shape[:-3], n, -1) for t in (r_q, r_k, r_v)], dim=-1)
    weight = torch.cat([block.query.weight, block.key.weight, block.value.weight], dim=0)
    product = None
    if len(record.projections) == 3:
        outputs = torch.cat([record.projections[name] for name in "qkv"], dim=-1)
        product = _forward_product(outputs, block.query, block.key, block.value)
    r_attn_in = to_tokens(linear_rule(record.attn_in, weight, r_qkv, rules, product))
    return r_probs, fork_rule(x, spread(r_x_skip), r_attn_in)


def _merge_relevance(merge: Merge, record: MergeRecord, relevance: torch.Tensor, rules: Rules) -> torch.Tensor:
    """A patch merge backwards: its norm passes, the reduction linear's rule, then each 2x2 source takes
    its chunk of the concatenated features. (..., B, N_{s+1}, 2D) -> (..., B, N_s, D)."""
    r_cat = linear_rule(record.reduction_in, merge.reduction.weight, relevance, rules)
    return record.layout.split(r_cat)


def _pixel_relevance(resolved: ResolvedModel, tape: Tape, relevance: torch.Tensor) -> torch.Tensor:
    """From relevance on the embedded tokens to pixels: position add (z-rule), drop non-patch tokens, z^B conv."""
    if resolved.spec.patch_layout == "naflex":
        return _naflex_pixel_relevance(resolved, tape, relevance)
    patch_out = tape.patch_out
    _b, d, gh, gw = patch_out.shape
    # (B, P, D) before positions are added: the convolution's output, or the norm's after it (which passes)
    source = tape.patch_tokens if tape.patch_tokens is not None else patch_out.flatten(2).transpose(1, 2)
    tokens = widen(source)
    embedded = widen(tape.embedded)
    prefix = resolved.prefix_tokens
    r_tokens = relevance.to(embedded.device)[..., prefix : prefix + gh * gw, :]
    r_tokens = tokens * sdiv(r_tokens, embedded[:, prefix : prefix + gh * gw])
    r_grid = r_tokens.transpose(-1, -2).reshape(*r_tokens.shape[:-2], d, gh, gw)
    conv = resolved.patch_embedding
    padding = (0, 0) if conv.padding == "valid" else conv.padding  # SigLIP spells no padding "valid"
    r_pixels = bounded_conv_rule(tape.patch_in, conv.weight, r_grid, conv.stride, padding)
    return r_pixels.sum(dim=-3)


def _naflex_pixel_relevance(resolved: ResolvedModel, tape: Tape, relevance: torch.Tensor) -> torch.Tensor:
    """NaFlex: position add (z-rule), z^B rule on the linear patch embedding with each image's bounds taken
    over its real patches only, then each patch's (py, px, c) values summed over c and put on the pixel grid."""
    layout = tape.layout
    tokens, embedded = widen(tape.patch_out), widen(tape.embedded)  # (B, P, D) before / after positions
    r_tokens = tokens * sdiv(relevance.to(embedded.device), embedded)
    x = widen(tape.patch_in)
    real = layout.token_mask(x.shape[1]).to(x.device).bool().unsqueeze(-1).expand_as(x)  # type: ignore[union-attr]
    low = x.masked_fill(~real, float("inf")).amin(dim=(1, 2), keepdim=True)
    high = x.masked_fill(~real, float("-inf")).amax(dim=(1, 2), keepdim=True)
    r_x = bounded_linear_rule(x, resolved.patch_embedding.weight, r_tokens, low, high)
    patch_h, patch_w = resolved.patch_size
    r_patches = r_x.reshape(*r_x.shape[:-1], patch_h, patch_w, resolved.num_channels).sum(dim=-1)
    return layout.patches_to_pixels(r_patches, patch_h)  # type: ignore[union-attr]


StartRelevance = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
Start = Callable[[Rules], StartRelevance]
"""The relevance a walk starts from, for one rule set: on the sequence the head reads (T, B, N, D), and for an
attention-pooling head its R_A (T, B, H, 1, N) and the share left on its query (T, B)."""


def head_start(resolved: ResolvedModel, tape: Tape, relevance: torch.Tensor) -> Start:
    """The start from relevance on the head's output (T, B, C): a one-hot on the logits, or an embedding's
    relevance (image–text models), through the family's exact head rule."""

    def start(rules: Rules) -> StartRelevance:
        modules = [*resolved.heads, *([resolved.probe.module] if resolved.probe is not None else [])]
        with _Weights(resolved.model).loaded(*modules):
            return _head_relevance(resolved, tape, widen(relevance), rules)

    return start


def hidden_start(resolved: ResolvedModel, tape: Tape, grad: torch.Tensor) -> Start:
    """The start for any target (hfrel's extension): hidden state x gradient through the linear rule.

    `grad` is the target's gradient w.r.t. the last hidden states (T, B, N, D); for an attention-pooling
    head, w.r.t. its pooled output (T, B, D), which then goes down through the head's rules.
    """

    def start(rules: Rules) -> StartRelevance:
        if resolved.probe is None:
            return hidden_relevance(tape.pooled_from.detach(), grad, rules), None, None  # type: ignore[union-attr]
        pooled = tape.probe.y.detach().unsqueeze(-2)  # type: ignore[union-attr]
        r_pooled = hidden_relevance(pooled, grad.unsqueeze(-2), rules).squeeze(-2)
        with _Weights(resolved.model).loaded(resolved.probe.module):
            return _head_relevance(resolved, tape, r_pooled, rules)

    return start


def propagate(
    resolved: ResolvedModel,
    tape: Tape,
    start: Start,
    rules: Rules,
    down_to: int,
    to_pixels: bool,
    release: bool = False,
) -> Relevance:
    """Walk relevance from its start (`head_start`, `hidden_start`) down to block `down_to`, or to the pixels.

    For a text tower "pixels" are the tokens: the relevance of the first block's input, summed over features.
    `release`: this is the tape's last relevance pass, so each block's activations (all but A_l) are
    dropped once the pass has left the block; the peak memory then falls as the pass goes down.
    """
    weights = _Weights(resolved.model)
    with torch.no_grad():
        relevance, probe, probe_query = start(rules)
        attention: dict[int, torch.Tensor] = {}
        totals: dict[int, torch.Tensor] = {}
        merges: dict[int, torch.Tensor] = {}
        last = 0 if to_pixels else down_to
        for index in range(len(resolved.blocks) - 1, last - 1, -1):
            merge = resolved.merges.get(index)  # a patch merge below this block: the walk goes through it
            need_input = index > last or to_pixels or merge is not None
            block = resolved.blocks[index]
            record = tape.layers[index]
            rows = _live_rows(relevance) if index == len(resolved.blocks) - 1 and record.layout is None else None
            with weights.loaded(block.module):
                r_probs, relevance = _block_relevance(block, record, relevance, rules, need_input, rows)
            if release:
                record.release()
            attention[index] = r_probs
            if relevance is not None:
                totals[index] = relevance.sum(dim=(-2, -1))
            if merge is not None:
                with weights.loaded(merge.module):
                    relevance = _merge_relevance(merge, tape.merges[index], relevance, rules)
                merges[index] = relevance.sum(dim=-1)
        pixels = None
        if to_pixels and resolved.patch_embedding is None:  # a text tower: the tokens
            pixels = relevance.sum(dim=-1)
        elif to_pixels:
            with weights.loaded(resolved.patch_embedding):
                pixels = _pixel_relevance(resolved, tape, relevance)
    return Relevance(
        attention=attention, pixels=pixels, totals=totals, merges=merges, probe=probe, probe_query=probe_query
    )
