"""Family specs: how a plain vision transformer is built, said by role, and resolved onto a live model.

A spec names each part a relevance rule needs (the q/k/v/out linears, the MLP linears, layer scales,
the head and how it pools tokens) by short paths relative to a block or to the model. A path may list
alternatives separated by "|" so that one spec covers module layouts of several transformers releases.
The list of blocks itself is found by type: the one `nn.ModuleList` whose children all carry the roles.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from hfrel._compat import SUPPORTED_TRANSFORMERS
from hfrel._errors import FamilySpecError, UnsupportedModelError

if TYPE_CHECKING:
    from hfrel.models._swin import WindowLayout

Pooling = Literal["cls", "cls+dist", "mean", "cls+mean", "token", "probe"]
"""How the classification head reads the token sequence.

- "cls": the first token;
- "cls+dist": the first two tokens (CLS, distillation), each with its own head, logits averaged;
- "mean": the mean of the patch tokens;
- "cls+mean": the first token concatenated with the mean of the patch tokens;
- "token": one token per sequence, at a position the explainer gives (a text tower's EOS or last token);
- "probe": an attention-pooling head (a learned query attending over all tokens, SigLIP), whose
  attention hfrel treats as the last attention layer.
"""

POOLINGS: tuple[str, ...] = ("cls", "cls+dist", "mean", "cls+mean", "token", "probe")


@dataclass(frozen=True)
class FamilySpec:
    """Describes one family of vision transformers by role: plain pre-LayerNorm ones by default; windowed,
    hierarchical (stages with patch merges) and post-norm ones through the fields below `probs_tap`.

    Paths are dotted attribute paths; "a|b" means "a, or else b". Block roles are relative to one
    block, the others relative to the model passed to `hfrel.attach`.
    """

    name: str
    """Short family name shown in messages and docs, e.g. "vit"."""
    model_types: tuple[str, ...]
    """Values of `config.model_type` this spec handles."""
    classes: tuple[str, ...]
    """Model class names this spec handles (classification models with a linear head)."""
    embeddings: str
    """Module whose output is the token sequence with position embeddings added."""
    heads: tuple[str, ...] = ("classifier",)
    """The classifier `nn.Linear`(s); two for "cls+dist" pooling (CLS head, distillation head); none for a
    backbone, which is explained with `target=` and whose `pooling` says which tokens it pools."""
    final_norm: str | None = None
    """Module whose output is the sequence the head pools from; None: the last block's output."""
    query: str = "attention.q_proj"
    key: str = "attention.k_proj"
    value: str = "attention.v_proj"
    out: str = "attention.o_proj"
    mlp_in: str = "mlp.fc1"
    """First MLP linear (for a gated MLP: the "up" linear, multiplied by the activated gate)."""
    mlp_out: str = "mlp.fc2"
    mlp_gate: str | None = None
    """Gate linear of a gated (SwiGLU) MLP: `mlp_out(act(gate(x)) * mlp_in(x))`; absent means plain MLP."""
    layer_scales: tuple[str | None, str | None] = (None, None)
    """Element-wise scales of the attention and MLP branches (tensors, floats or None at the path)."""
    attention: str = "attention"
    """The block's attention module: the one that calls transformers' attention function."""
    pooling: Pooling | Callable[[object], Pooling] = "cls"
    """How the head reads tokens, or a function of the (vision) config that says so."""
    prefix_tokens: int | Callable[[object], int] = 1
    """Tokens before the patch tokens (CLS, distillation, registers), or a function of the config."""
    vision_config: str | None = None
    """Attribute of `model.config` holding the vision config (CLIP); None: `model.config` itself."""
    interpolation: Literal["flag", "always"] | Callable[[object], Literal["flag", "always"]] = "flag"
    """"flag": other image sizes need `interpolate_pos_encoding=True`; "always": the model takes any size;
    or a function of the (vision) config that says which."""
    eager_attention: Callable[[], type] | None = None
    """For models whose attention does not go through transformers' AttentionInterface: returns the
    model's own eager attention class, swapped in while attached so attention probabilities exist."""
    probs_tap: str | None = None
    """With `eager_attention`: the block-relative module that receives the attention probabilities."""
    tower: str | None = None
    """Submodule holding this spec's blocks (an image–text model's "vision_model" or "text_model"); None: the model."""
    modality: Literal["image", "text"] = "image"
    """"image": patch tokens from a patch embedding; "text": token embeddings (no pixels, no patch grid)."""
    probe: str | None = None
    """With pooling "probe": the attention-pooling head (probe, `nn.MultiheadAttention`, layernorm, MLP)."""
    stages: str | None = None
    """Hierarchical models (Swin): path of the list of stages, each holding `stage_blocks` and optionally a
    patch-merging `merge` module after them; None: one list of blocks, found by type."""
    stage_blocks: str = "blocks"
    merge: str = "downsample"
    """Stage-relative path of the patch merge (a module whose `merge_reduction` linear maps 4D -> 2D)."""
    merge_reduction: str = "reduction"
    windows: Callable[[nn.Module, tuple[int, int]], WindowLayout] | None = None
    """Windowed attention: the block's window layout from the block module (after its forward) and its
    input grid (height, width); None: attention over the whole token sequence."""
    branch_norms: tuple[str, str] | None = None
    """Post-norm residual branches (SwinV2: `x + LN(attn(x))`): the norms ending the attention and MLP
    branches; None: pre-norm blocks."""
    cosine_scores: bool = False
    """Scores are cosine similarities of q and k (SwinV2), times a learned per-head scale."""
    embedding_norm: str | None = None
    """A norm between the patch convolution and the position add (Swin), read by the pixel rule."""
    size_check: Callable[[object, int, int], str | None] | None = None
    """Image sizes the model cannot run: (config, height, width) -> what is wrong and what to do, or None."""
    patch_layout: Literal["grid", "naflex"] = "grid"
    """"grid": images (B, C, H, W) cut by a patch Conv2d; "naflex": already cut into patches, each image at
    its own aspect ratio (pixel_values (B, P, C*p*p) flattened row by row as (py, px, c), embedded by a
    Linear; `spatial_shapes` (B, 2) gives each image's patch grid, `pixel_attention_mask` its real patches)."""
    notes: str = field(default="", compare=False)
    """One line for the docs: what differs from plain ViT."""

    def __post_init__(self) -> None:
        if not callable(self.pooling) and self.pooling not in POOLINGS:
            raise FamilySpecError(f"pooling must be one of {POOLINGS} or a callable, got {self.pooling!r}")
        if self.pooling == "cls+dist" and self.heads and len(self.heads) != 2:
            raise FamilySpecError('pooling "cls+dist" needs two heads (CLS head, distillation head)')
        if (self.pooling == "probe") != (self.probe is not None):
            raise FamilySpecError('pooling "probe" and probe go together: give both or neither')
        if (self.eager_attention is None) != (self.probs_tap is None):
            raise FamilySpecError("eager_attention and probs_tap go together: give both or neither")


@dataclass
class Block:
    """The modules of one transformer block, bound by role."""

    module: nn.Module
    attention: nn.Module
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    out: nn.Linear
    mlp_in: nn.Linear
    mlp_out: nn.Linear
    mlp_gate: nn.Linear | None
    scale_paths: tuple[str | None, str | None]
    probs_tap: nn.Module | None
    num_heads: int = 0
    branch_norms: tuple[nn.Module, nn.Module] | None = None
    """Post-norm blocks: the norms ending the attention and MLP branches."""
    cosine_scores: bool = False
    mlp_act: nn.Module | None = None
    """The activation between the two MLP linears of a plain MLP, found by type (the MLP's one parameterless
    module that is not a linear or dropout); None if there is no single such module or the MLP is gated."""

    def scales(self) -> tuple[torch.Tensor | float | None, torch.Tensor | float | None]:
        """Current layer-scale values (read at use time, so training updates are seen)."""
        return tuple(_scale_value(self.module, path) for path in self.scale_paths)  # type: ignore[return-value]


@dataclass
class Probe:
    """An attention-pooling head: `a = MHA(probe, h, h)`, `pooled = a + MLP(LN(a))`, read at the probe's row."""

    module: nn.Module
    attention: nn.MultiheadAttention
    mlp_in: nn.Linear
    mlp_out: nn.Linear


@dataclass
class Merge:
    """A patch-merging layer between two stages: concatenate 2x2 tokens, norm and linear reduction."""

    module: nn.Module
    reduction: nn.Linear


@dataclass
class ResolvedModel:
    """A spec bound to one live model: every role is a real module."""

    spec: FamilySpec
    model: nn.Module
    config: object
    blocks: list[Block]
    embeddings: nn.Module
    patch_embedding: nn.Conv2d | nn.Linear | None
    """The patch embedding: a Conv2d over the image, or (NaFlex) a Linear over flattened patches; None for a
    text tower."""
    final_norm: nn.Module | None
    heads: list[nn.Linear]
    pooling: Pooling
    prefix_tokens: int
    num_heads: int
    patch_size: tuple[int, int]
    image_size: tuple[int, int]
    """The size the model was trained at; (0, 0) for NaFlex models, which have none."""
    num_channels: int
    num_labels: int
    probe: Probe | None = None
    interpolation: Literal["flag", "always"] = "flag"
    embedding_norm: nn.Module | None = None
    merges: dict[int, Merge] = field(default_factory=dict)
    """Patch merges by the index of the first block after them (hierarchical models); empty for ViT."""


_REGISTRY: list[FamilySpec] = []


def register_family(spec: FamilySpec) -> FamilySpec:
    """Teach hfrel a new family of plain vision transformers; later registrations win on overlap."""
    if not isinstance(spec, FamilySpec):
        raise FamilySpecError(f"register_family expects a hfrel.FamilySpec, got {type(spec).__name__}")
    _REGISTRY.insert(0, spec)
    return spec


def registered_families() -> list[FamilySpec]:
    """The registered family specs, most recently registered first."""
    return list(_REGISTRY)


def supported_models() -> dict[str, list[str]]:
    """Model classes hfrel can explain, by `model_type` (image–text models included)."""
    from hfrel.models._image_text import image_text_specs  # that module builds on this one

    table: dict[str, list[str]] = {}
    for spec in [*reversed(_REGISTRY), *image_text_specs()]:
        for model_type in spec.model_types:
            names = table.setdefault(model_type, [])
            names.extend(c for c in spec.classes if c not in names)
    return table


def _supported_text() -> str:
    return "; ".join(f"{mt}: {', '.join(cls)}" for mt, cls in sorted(supported_models().items()))


# Hierarchical / windowed families hfrel refuses by name (docs/models.md: what each would take).
_OTHER_HIERARCHICAL = {
    "hiera": "Hiera",
    "pvt": "PVT",
    "pvt_v2": "PVT v2",
    "dinat": "DiNAT",
    "nat": "NAT",
    "donut-swin": "Donut-Swin",
}


def find_spec(model: nn.Module) -> FamilySpec:
    """The spec for this model's `model_type` and class, or an `UnsupportedModelError` saying what is supported."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    class_name = type(model).__name__
    lineage = {cls.__name__ for cls in type(model).__mro__}
    if model_type is None:
        raise UnsupportedModelError(
            f"hfrel explains Hugging Face transformers image classifiers; got a {class_name} without a "
            f"`config.model_type`. Load one with AutoModelForImageClassification.from_pretrained(...). "
            f"Supported: {_supported_text()}."
        )
    for spec in _REGISTRY:
        if model_type in spec.model_types and lineage.intersection(spec.classes):
            return spec
    if model_type in _OTHER_HIERARCHICAL and not any(model_type in spec.model_types for spec in _REGISTRY):
        raise UnsupportedModelError(
            f"{_OTHER_HIERARCHICAL[model_type]} ({class_name}, model_type {model_type!r}) is not supported: hfrel "
            f"explains Swin and SwinV2 among hierarchical vision transformers. docs/models.md says what this "
            f"family would need. Supported: {_supported_text()}."
        )
    known_type = any(model_type in spec.model_types for spec in _REGISTRY)
    if known_type:
        classes = sorted({c for s in _REGISTRY if model_type in s.model_types for c in s.classes})
        raise UnsupportedModelError(
            f"hfrel cannot explain a {class_name} (model_type {model_type!r}): it explains the models "
            f"{', '.join(classes)} of this family (classifiers with a linear head; backbones with target=). "
            f"Load the checkpoint with AutoModelForImageClassification, or AutoModel for the backbone."
        )
    raise UnsupportedModelError(
        f"hfrel cannot explain model_type {model_type!r} ({class_name}). It explains plain vision transformers "
        f"and Swin / SwinV2 classifiers; other hierarchical or windowed models (Hiera, PVT, DiNAT, Donut-Swin, "
        f"MobileViT, ...), CNNs and text models are not supported. Supported: {_supported_text()}. A plain "
        f"pre-LayerNorm ViT variant can be described with hfrel.register_family(hfrel.FamilySpec(...)) "
        f"(see docs/models.md)."
    )


def _get(root: nn.Module, path: str) -> object | None:
    """The attribute at the first alternative of `path` ("a.b|c.d") that exists, else None."""
    for alternative in path.split("|"):
        try:
            return operator.attrgetter(alternative.strip())(root)
        except AttributeError:
            continue
    return None


def _scale_value(block: nn.Module, path: str | None) -> torch.Tensor | float | None:
    if path is None:
        return None
    value = _get(block, path)
    if value is None or (isinstance(value, float) and value == 1.0):
        return None
    if isinstance(value, (torch.Tensor, float, int)):
        return value
    raise UnsupportedModelError(f"layer scale at {path!r} is a {type(value).__name__}, expected a tensor or a float")


def _need(root: nn.Module, path: str, kind: type, what: str, where: str) -> nn.Module:
    found = _get(root, path)
    if not isinstance(found, kind):
        got = "nothing" if found is None else type(found).__name__
        raise UnsupportedModelError(
            f"{where}: expected the {what} ({kind.__name__}) at {path!r}, found {got}. This transformers "
            f"release may lay the model out differently; hfrel supports transformers{SUPPORTED_TRANSFORMERS}."
        )
    return found


def _resolve_block(spec: FamilySpec, block: nn.Module, where: str, num_heads: int) -> Block:
    gate = None
    if spec.mlp_gate is not None and _get(block, spec.mlp_gate) is not None:
        gate = _need(block, spec.mlp_gate, nn.Linear, "MLP gate linear", where)
    return Block(
        module=block,
        attention=_need(block, spec.attention, nn.Module, "attention module", where),
        query=_need(block, spec.query, nn.Linear, "query linear", where),
        key=_need(block, spec.key, nn.Linear, "key linear", where),
        value=_need(block, spec.value, nn.Linear, "value linear", where),
        out=_need(block, spec.out, nn.Linear, "attention output linear", where),
        mlp_in=_need(block, spec.mlp_in, nn.Linear, "first MLP linear", where),
        mlp_out=_need(block, spec.mlp_out, nn.Linear, "second MLP linear", where),
        mlp_gate=gate,
        scale_paths=spec.layer_scales,
        probs_tap=_need(block, spec.probs_tap, nn.Module, "attention-probabilities module", where)
        if spec.probs_tap
        else None,
        num_heads=num_heads,
        branch_norms=tuple(_need(block, p, nn.Module, "branch norm", where) for p in spec.branch_norms)  # type: ignore[arg-type]
        if spec.branch_norms
        else None,
        cosine_scores=spec.cosine_scores,
        mlp_act=None if gate is not None else _activation(block, _get(block, spec.mlp_in)),
    )


def _activation(block: nn.Module, mlp_in: nn.Module) -> nn.Module | None:
    """The activation module beside the first MLP linear: the only child of its parent that has no parameters and
    is not a linear or a dropout (`activation_fn`, `intermediate_act_fn`, ...); None where that is ambiguous."""
    parent = next((m for m in block.modules() if any(c is mlp_in for c in m.children())), None)
    if parent is None:
        return None
    found = [
        child
        for child in parent.children()
        if not isinstance(child, (nn.Linear, nn.Dropout)) and next(child.parameters(), None) is None
    ]
    return found[0] if len(found) == 1 else None


def _resolve_probe(model: nn.Module, path: str, where: str) -> Probe:
    head = _need(model, path, nn.Module, "attention-pooling head", where)
    return Probe(
        module=head,
        attention=_need(head, "attention", nn.MultiheadAttention, "probe attention", where),
        mlp_in=_need(head, "mlp.fc1", nn.Linear, "probe MLP first linear", where),
        mlp_out=_need(head, "mlp.fc2", nn.Linear, "probe MLP second linear", where),
    )


def _find_blocks(spec: FamilySpec, model: nn.Module) -> list[nn.Module]:
    """The blocks: the one ModuleList whose every child carries the query and MLP roles."""
    candidates = []
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and all(
                isinstance(_get(child, spec.query), nn.Linear) and isinstance(_get(child, spec.mlp_out), nn.Linear)
                for child in module
            )
        ):
            candidates.append((name, module))
    if len(candidates) != 1:
        found = ", ".join(n for n, _ in candidates) or "none"
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected exactly one list of transformer blocks with {spec.query!r} and "
            f"{spec.mlp_out!r}, found {found}. hfrel supports transformers{SUPPORTED_TRANSFORMERS}."
        )
    return list(candidates[0][1])


def _find_stages(spec: FamilySpec, model: nn.Module, where: str) -> tuple[list[nn.Module], dict[int, Merge]]:
    """Hierarchical models: every stage's blocks in order, and the merges between stages."""
    stages = _need(model, spec.stages, nn.ModuleList, "list of stages", where)  # type: ignore[arg-type]
    blocks: list[nn.Module] = []
    merges: dict[int, Merge] = {}
    pending: Merge | None = None
    for number, stage in enumerate(stages):
        stage_blocks = _need(stage, spec.stage_blocks, nn.ModuleList, "list of blocks", f"{where} stage {number}")
        if len(stage_blocks) == 0:
            raise UnsupportedModelError(f"{where}: stage {number} has no blocks")
        if pending is not None:
            merges[len(blocks)] = pending
        blocks.extend(stage_blocks)
        merge = _get(stage, spec.merge)
        pending = None
        if merge is not None:
            reduction = _need(
                merge, spec.merge_reduction, nn.Linear, "merge reduction linear", f"{where} stage {number}"
            )
            pending = Merge(module=merge, reduction=reduction)  # type: ignore[arg-type]
    if pending is not None:
        raise UnsupportedModelError(f"{where}: the last stage ends in a patch merge; hfrel expects the head after it")
    return blocks, merges


def _block_heads(block: nn.Module, spec: FamilySpec, config: object) -> int:
    """Heads of one block: the model-wide count, or the block's own where they differ by stage (Swin)."""
    heads = getattr(config, "num_attention_heads", None)
    if isinstance(heads, int):
        return heads
    attention = _get(block, spec.attention)
    for name in ("num_attention_heads", "num_heads"):
        if isinstance(getattr(attention, name, None), int):
            return int(getattr(attention, name))
    raise UnsupportedModelError(f"cannot tell the number of attention heads of {type(attention).__name__}")


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)  # type: ignore[arg-type]


def resolve(spec: FamilySpec, model: nn.Module) -> ResolvedModel:
    """Bind every role of `spec` to a module of `model`; raises UnsupportedModelError naming what is missing."""
    config = model.config
    vision = getattr(config, spec.vision_config) if spec.vision_config else config
    where = f"{type(model).__name__} ({spec.name})"
    merges: dict[int, Merge] = {}
    if spec.stages is not None:
        modules, merges = _find_stages(spec, model, where)
    else:
        tower = _need(model, spec.tower, nn.Module, "tower", where) if spec.tower else model
        modules = _find_blocks(spec, tower)
    blocks = [
        _resolve_block(spec, b, f"{where} block {i}", _block_heads(b, spec, vision)) for i, b in enumerate(modules)
    ]
    embeddings = _need(model, spec.embeddings, nn.Module, "embeddings module", where)
    kind = nn.Linear if spec.patch_layout == "naflex" else nn.Conv2d
    found = [m for m in embeddings.modules() if isinstance(m, kind)]
    image = spec.modality == "image"
    if image and len(found) != 1:
        raise UnsupportedModelError(
            f"{where}: expected one patch-embedding {kind.__name__} in the embeddings, found {len(found)}"
        )
    patch_embedding = found[0] if image else None
    if patch_embedding is None:  # a text tower
        patch_size, channels = (1, 1), 0
    elif isinstance(patch_embedding, nn.Conv2d):
        patch_size, channels = _pair(patch_embedding.stride), int(patch_embedding.in_channels)
    else:
        patch_size, channels = _pair(vision.patch_size), int(vision.num_channels)
        if patch_embedding.in_features != channels * patch_size[0] * patch_size[1]:
            raise UnsupportedModelError(
                f"{where}: the patch embedding takes {patch_embedding.in_features} values per patch, expected "
                f"{channels} channels x {patch_size[0]} x {patch_size[1]} pixels"
            )
    heads = [_need(model, h, nn.Linear, "classifier linear", where) for h in spec.heads]
    final_norm = _need(model, spec.final_norm, nn.Module, "final norm", where) if spec.final_norm else None
    pooling = spec.pooling(vision) if callable(spec.pooling) else spec.pooling
    if pooling not in POOLINGS:
        raise UnsupportedModelError(f"{where}: pooling {pooling!r} is not one of {POOLINGS}")
    prefix = spec.prefix_tokens(vision) if callable(spec.prefix_tokens) else spec.prefix_tokens
    num_labels = heads[0].out_features if heads else 0
    interpolation = spec.interpolation(vision) if callable(spec.interpolation) else spec.interpolation
    if pooling == "cls+mean" and heads and heads[0].in_features != 2 * blocks[0].out.out_features:
        raise UnsupportedModelError(f"{where}: a CLS+mean head must take twice the hidden size")
    return ResolvedModel(
        spec=spec,
        model=model,
        config=vision,
        blocks=blocks,
        embeddings=embeddings,
        patch_embedding=patch_embedding,
        final_norm=final_norm,
        heads=heads,
        pooling=pooling,
        prefix_tokens=int(prefix),
        num_heads=blocks[0].num_heads,
        patch_size=patch_size,
        image_size=_pair(getattr(vision, "image_size", 0)),
        num_channels=channels,
        num_labels=int(num_labels),
        probe=_resolve_probe(model, spec.probe, where) if spec.probe else None,
        interpolation=interpolation,
        embedding_norm=_need(model, spec.embedding_norm, nn.Module, "embedding norm", where)
        if spec.embedding_norm
        else None,
        merges=merges,
    )
