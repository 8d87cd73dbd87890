"""Capture: the registered attention function and the hooks that record what the relevance rules need.

Fused attention (sdpa, flash) never materialises the attention probabilities A_l, so while a model is
attached it runs `capture_attention`, registered with transformers' AttentionInterface under
`ATTENTION_NAME`. Its arithmetic is transformers' eager attention; on top it hands q, k, v and A_l to
the tape of the explanation in progress (A_l v is the output linear's input, recorded there).
Linear inputs and outputs come from forward hooks. Nothing is recorded unless an explanation is
running, so plain forwards of an attached model keep no memory.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from hfrel._layout import TokenLayout
from hfrel.models._spec import ResolvedModel
from hfrel.models._swin import MergeLayout, WindowLayout

ATTENTION_NAME = "hfrel_capture"

# Attention module -> (the recorder of the explainer attached to it, the block's index). Filled on
# attach, emptied on detach; weak on both sides, so a model attached and forgotten is still freed.
_ATTENTION_SINKS: weakref.WeakKeyDictionary[nn.Module, tuple[weakref.ref[Recorder], int]] = weakref.WeakKeyDictionary()


def capture_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention that also reports its tensors to the explainer attached to `module`."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    *lead, tokens, width = query.shape
    flat_query = query.reshape(-1, tokens, width)
    flat_key = key.reshape(-1, key.shape[-2], width).transpose(-1, -2)
    # scale inside the GEMM (alpha): no extra pass over the (B, H, N, N) scores
    logits = torch.baddbmm(flat_query.new_empty(()), flat_query, flat_key, beta=0.0, alpha=scaling)
    logits = logits.view(*lead, tokens, key.shape[-2])
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attention_mask, torch.finfo(logits.dtype).min)
        else:
            logits = logits + attention_mask
    probs = nn.functional.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    context = torch.matmul(probs, value)
    sink = _ATTENTION_SINKS.get(module)
    if sink is not None and (recorder := sink[0]()) is not None:
        recorder.on_attention(sink[1], query, key, value, probs)
    return context.transpose(1, 2).contiguous(), probs


AttentionInterface.register(ATTENTION_NAME, capture_attention)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


@dataclass
class LayerRecord:
    """What one block's forward left for the explanation (None where the call did not need it)."""

    x: torch.Tensor | None = None  # block input (B, N, D)
    attn_in: torch.Tensor | None = None  # input of the q/k/v linears (B, N, D)
    q: torch.Tensor | None = None  # (B, H, N, d)
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    probs: torch.Tensor | None = None  # A_l (B, H, N, N), part of the autograd graph when gradients are needed
    out_in: torch.Tensor | None = None  # input of the attention output linear (B, N, D)
    out_out: torch.Tensor | None = None  # its output
    projections: dict[str, torch.Tensor] = field(default_factory=dict)  # outputs of the q/k/v linears (B, N, H*d)
    mlp_x: torch.Tensor | None = None  # input of the first MLP linear(s)
    mlp_h: torch.Tensor | None = None  # input of the second MLP linear; None when `mlp_pre` rebuilds it
    mlp_pre: torch.Tensor | None = None  # output of the first MLP linear, when its activation rebuilds `mlp_h`
    mlp_out: torch.Tensor | None = None  # its output
    y: torch.Tensor | None = None  # output of the block
    attn_branch: torch.Tensor | None = None  # post-norm blocks: the attention branch after its norm (B, N, D)
    mlp_branch: torch.Tensor | None = None  # post-norm blocks: the MLP branch after its norm
    grid: tuple[int, int] | None = None  # windowed blocks: the (height, width) token grid of the input
    layout: WindowLayout | None = None  # windowed blocks: window <-> raster map; None: attention over all tokens

    def release(self) -> None:
        """Drop every activation but A_l (and its layout), so a relevance pass can free each block as it leaves it."""
        for name in (f.name for f in fields(self) if f.name not in ("probs", "grid", "layout")):
            setattr(self, name, None)
        self.projections = {}


@dataclass
class MergeRecord:
    """What one patch merge between stages left: its index map and the input of its reduction linear."""

    layout: MergeLayout
    reduction_in: torch.Tensor | None = None  # (B, N_{s+1}, 4D)


@dataclass
class Tape:
    """Everything recorded during one explanation's forward pass."""

    layers: list[LayerRecord]
    activations: bool  # record the tensors the relevance pass needs, not only A_l
    patch_in: torch.Tensor | None = None  # input of the patch embedding (images, or NaFlex's flat patches)
    patch_out: torch.Tensor | None = None  # its output: (B, D, gh, gw), or (B, P, D) for NaFlex
    embedded: torch.Tensor | None = None  # token sequence with positions added (B, N, D)
    pooled_from: torch.Tensor | None = None  # the sequence the head pools (B, N, D)
    head_in: list[torch.Tensor] = field(default_factory=list)  # input of each classifier linear
    patch_tokens: torch.Tensor | None = None  # output of a norm between patch conv and position add (B, P, D)
    merges: dict[int, MergeRecord] = field(default_factory=dict)  # by the index of the first block after
    layout: TokenLayout | None = None  # where each image's patch tokens sit (set by the explainer)
    probe: LayerRecord | None = None  # an attention-pooling head: its attention (A: (B, H, 1, N)) and MLP
    positions: torch.Tensor | None = None  # pooling "token": the token each sequence is read at (B,)


def _first(args: tuple, kwargs: dict, name: str) -> torch.Tensor:
    return args[0] if args else kwargs[name]


def _tensor(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[return-value]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, H*d) -> (B, H, N, d)."""
    b, n, _ = x.shape
    return x.view(b, n, num_heads, -1).transpose(1, 2)


class Recorder:
    """Installs the forward hooks of one attached model and routes what they see to the current tape."""

    def __init__(self, resolved: ResolvedModel) -> None:
        self._resolved = resolved
        self.tape: Tape | None = None
        # block index -> whether its activation module, applied to the first MLP linear's output, gives exactly
        # the second linear's input (checked on the first explanation; see `_on_mlp_out`)
        self._activation_exact: dict[int, bool] = {}

    def new_tape(self, activations: bool) -> Tape:
        self.tape = Tape(layers=[LayerRecord() for _ in self._resolved.blocks], activations=activations)
        return self.tape

    def install(self, undo: list[Callable[[], None]]) -> None:
        """Register every hook and sink; each step appends its own undo to `undo` as soon as it is done."""
        resolved = self._resolved
        eager = resolved.spec.eager_attention is not None
        for index, block in enumerate(resolved.blocks):
            self._hook(undo, block.module, self._on_block(index), pre=True)
            self._hook(undo, block.module, self._on_block_out(index))
            self._hook(undo, block.query, self._on_query(index, eager))
            self._hook(undo, block.key, self._on_projection(index, "k", eager))
            self._hook(undo, block.value, self._on_projection(index, "v", eager))
            self._hook(undo, block.out, self._on_out(index))
            self._hook(undo, block.mlp_in, self._on_mlp_in(index))
            self._hook(undo, block.mlp_out, self._on_mlp_out(index))
            if block.branch_norms is not None:
                self._hook(undo, block.branch_norms[0], self._on_branch_norm(index, "attn_branch"))
                self._hook(undo, block.branch_norms[1], self._on_branch_norm(index, "mlp_branch"))
            if eager:
                self._hook(undo, block.probs_tap, self._on_probs(index), pre=True)  # type: ignore[arg-type]
            else:
                _ATTENTION_SINKS[block.attention] = (weakref.ref(self), index)
                undo.append(lambda module=block.attention: _ATTENTION_SINKS.pop(module, None))
        for index, merge in resolved.merges.items():
            self._hook(undo, merge.module, self._on_merge(index), pre=True)
            self._hook(undo, merge.reduction, self._on_reduction(index))
        if resolved.embedding_norm is not None:
            self._hook(undo, resolved.embedding_norm, self._on_embedding_norm)
        if resolved.patch_embedding is not None:
            self._hook(undo, resolved.patch_embedding, self._on_patch)
        self._hook(undo, resolved.embeddings, self._on_embeddings)
        if resolved.probe is not None:
            self._hook(undo, resolved.probe.attention, self._on_probe_attention)
            self._hook(undo, resolved.probe.mlp_in, self._on_probe_mlp_in)
            self._hook(undo, resolved.probe.mlp_out, self._on_probe_mlp_out)
            self._hook(undo, resolved.probe.module, self._on_probe_out)
        if resolved.final_norm is not None:
            self._hook(undo, resolved.final_norm, self._on_final_norm)
        for head in resolved.heads:
            self._hook(undo, head, self._on_head, pre=True)

    @staticmethod
    def _hook(undo: list[Callable[[], None]], module: nn.Module, fn: Callable, pre: bool = False) -> None:
        if pre:
            handle = module.register_forward_pre_hook(fn, with_kwargs=True)
        else:
            handle = module.register_forward_hook(fn, with_kwargs=True)
        undo.append(handle.remove)

    def _layer(self, index: int) -> LayerRecord | None:
        tape = self.tape
        return tape.layers[index] if tape is not None and tape.activations else None

    def _on_block(self, index: int) -> Callable:
        windowed = self._resolved.spec.windows is not None

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if windowed and self.tape is not None:
                grid = args[1] if len(args) > 1 else kwargs["input_dimensions"]
                self.tape.layers[index].grid = (int(grid[0]), int(grid[1]))
            if (record := self._layer(index)) is not None:
                record.x = _first(args, kwargs, "hidden_states")

        return hook

    def _on_block_out(self, index: int) -> Callable:
        last = index == len(self._resolved.blocks) - 1
        no_final_norm = self._resolved.final_norm is None
        windows = self._resolved.spec.windows

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            if windows is not None and self.tape is not None:
                record = self.tape.layers[index]
                record.layout = windows(module, record.grid)  # type: ignore[arg-type]  # as the block ran it
            if (record := self._layer(index)) is not None:
                record.y = _tensor(output)
                if last and no_final_norm:
                    self.tape.pooled_from = record.y  # type: ignore[union-attr]

        return hook

    def _on_query(self, index: int, eager: bool) -> Callable:
        heads = self._resolved.blocks[index].num_heads

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if (record := self._layer(index)) is not None:
                record.attn_in = _first(args, kwargs, "input")
                record.projections["q"] = output
                if eager:
                    record.q = _heads(output, heads)

        return hook

    def _on_projection(self, index: int, which: str, eager: bool) -> Callable:
        heads = self._resolved.blocks[index].num_heads

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if (record := self._layer(index)) is not None:
                record.projections[which] = output
                if eager:
                    setattr(record, which, _heads(output, heads))

        return hook

    def _on_probs(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self.tape is not None:
                self.tape.layers[index].probs = _first(args, kwargs, "input")

        return hook

    def on_attention(self, index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, probs: torch.Tensor) -> None:
        """What hfrel's attention function saw in block `index`, onto the current tape."""
        tape = self.tape
        if tape is None:
            return
        record = tape.layers[index]
        record.probs = probs
        if tape.activations:
            record.q, record.k, record.v = q, k, v

    def _on_out(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if (record := self._layer(index)) is not None:
                record.out_in = _first(args, kwargs, "input")
                record.out_out = output

        return hook

    def _on_mlp_in(self, index: int) -> Callable:
        rebuilds = self._resolved.blocks[index].mlp_act is not None

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if (record := self._layer(index)) is not None:
                record.mlp_x = _first(args, kwargs, "input")
                full = output.dtype in (torch.float32, torch.float64)
                if rebuilds and full and self._activation_exact.get(index, True):
                    record.mlp_pre = output

        return hook

    def _on_mlp_out(self, index: int) -> Callable:
        """Keeps the second MLP linear's input, or, where the block's activation rebuilds it bit for bit from the
        first linear's output, that output instead: the same memory, and the relevance rule of the first linear
        then gets its denominator from one matrix product instead of two (`_lrp._forward_product`)."""
        activation = self._resolved.blocks[index].mlp_act

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if (record := self._layer(index)) is None:
                return
            record.mlp_out = output
            hidden = _first(args, kwargs, "input")
            if record.mlp_pre is not None and index not in self._activation_exact:
                with torch.no_grad():  # forward(), not __call__: no hooks of the user's fire
                    rebuilt = activation.forward(record.mlp_pre.detach())  # type: ignore[union-attr]
                self._activation_exact[index] = torch.equal(rebuilt, hidden.detach())
            if record.mlp_pre is None or not self._activation_exact[index]:
                record.mlp_pre, record.mlp_h = None, hidden

        return hook

    def _on_branch_norm(self, index: int, which: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if (record := self._layer(index)) is not None:
                setattr(record, which, output)

        return hook

    def _on_merge(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self.tape is not None:
                grid = args[1] if len(args) > 1 else kwargs["input_dimensions"]
                self.tape.merges[index] = MergeRecord(MergeLayout(int(grid[0]), int(grid[1])))

        return hook

    def _on_reduction(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if self.tape is not None and self.tape.activations and index in self.tape.merges:
                self.tape.merges[index].reduction_in = _first(args, kwargs, "input")

        return hook

    def _on_embedding_norm(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        if self.tape is not None and self.tape.activations:
            self.tape.patch_tokens = _tensor(output)

    def _on_patch(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        if self.tape is not None:
            self.tape.patch_in = _first(args, kwargs, "input")
            self.tape.patch_out = output

    def _on_embeddings(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        if self.tape is not None and self.tape.activations:
            self.tape.embedded = _tensor(output)

    def _on_final_norm(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        if self.tape is not None and self.tape.activations:
            self.tape.pooled_from = _tensor(output)

    def _on_probe_attention(self, module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: tuple) -> object:
        """Recompute the probe's attention with its own weights (eager arithmetic) so A exists per head, with grad.

        `nn.MultiheadAttention` returns only head-averaged weights; the recomputed output replaces the
        module's (equal up to rounding), so gradients flow through the recorded A.
        """
        tape = self.tape
        if tape is None:
            return None
        query, key, value = (args + tuple(kwargs[k] for k in ("query", "key", "value") if k in kwargs))[:3]
        width, heads = module.embed_dim, module.num_heads
        weight, bias = module.in_proj_weight, module.in_proj_bias
        chunks = [
            nn.functional.linear(
                x, weight[i * width : (i + 1) * width], None if bias is None else bias[i * width : (i + 1) * width]
            )
            for i, x in enumerate((query, key, value))
        ]
        q, k, v = (_heads(x, heads) for x in chunks)
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        mask = kwargs.get("attn_mask")  # Siglip2: additive (B * H, 1, N), or boolean (True: attend)
        if mask is not None:
            mask = mask.reshape(scores.shape)
            scores = (
                scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
            )
        padding = kwargs.get("key_padding_mask")  # (B, N), True: ignore
        if padding is not None:
            scores = scores.masked_fill(padding.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        context = probs @ v
        merged = context.transpose(1, 2).reshape(query.shape[0], query.shape[1], width)
        out = module.out_proj(merged)
        record = tape.probe = LayerRecord(probs=probs)
        if tape.activations:
            record.attn_in, record.q, record.k, record.v = key, q, k, v  # A v: out_in, by heads
            record.projections = {"k": chunks[1], "v": chunks[2]}
            record.out_in, record.out_out = merged, out
        return (out, *output[1:]) if isinstance(output, tuple) else out

    def _on_probe_mlp_in(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        if self.tape is not None and self.tape.activations and self.tape.probe is not None:
            self.tape.probe.mlp_x = _first(args, kwargs, "input")

    def _on_probe_mlp_out(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        if self.tape is not None and self.tape.activations and self.tape.probe is not None:
            self.tape.probe.mlp_h = _first(args, kwargs, "input")
            self.tape.probe.mlp_out = output

    def _on_probe_out(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        if self.tape is not None and self.tape.probe is not None:
            self.tape.probe.y = output  # (B, D): the pooled embedding, the probe's row

    def _on_head(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.tape is not None and self.tape.activations:
            self.tape.head_in.append(_first(args, kwargs, "input"))
