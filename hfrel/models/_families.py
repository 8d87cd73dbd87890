"""The families hfrel ships: one spec each. Adding a family is one spec here plus one tiny-config test case.

Paths name the module layouts of transformers 5.18 and later; ViT and DeiT also list the layout of
earlier 5.x releases as an alternative ("a|b": current layout first).
"""

from __future__ import annotations

from hfrel.models._spec import FamilySpec, register_family
from hfrel.models._swin import swin_size_problem, swin_windows

# Roles shared by the ViT-shaped families (ViT, DeiT) across transformers 5.x layouts.
_VIT_ROLES = dict(
    attention="attention.attention|attention",
    query="attention.q_proj|attention.attention.query",
    key="attention.k_proj|attention.attention.key",
    value="attention.v_proj|attention.attention.value",
    out="attention.o_proj|attention.output.dense",
    mlp_in="mlp.fc1|intermediate.dense",
    mlp_out="mlp.fc2|output.dense",
)


def _mean_or_cls(config: object) -> str:
    return "mean" if getattr(config, "use_mean_pooling", False) else "cls"


# BEiT's head and backbone (and Data2Vec-Vision, BEiT's architecture): layer scales, mean or CLS pooling.
_BEIT_ROLES = dict(layer_scales=("lambda_1", "lambda_2"), pooling=_mean_or_cls)


def _cls_and_registers(config: object) -> int:
    return 1 + int(config.num_register_tokens)


# Roles shared by DINOv2's head and backbone, with and without registers: layer scales, an optional
# SwiGLU MLP (the "fc1|up_proj" alternatives), any image size.
_DINOV2_ROLES = dict(
    mlp_in="mlp.fc1|mlp.up_proj",
    mlp_gate="mlp.gate_proj",
    mlp_out="mlp.fc2|mlp.down_proj",
    layer_scales=("layer_scale1.lambda1", "layer_scale2.lambda1"),
    interpolation="always",
)


def _data2vec_eager_attention() -> type:
    from transformers.models.data2vec import modeling_data2vec_vision

    return modeling_data2vec_vision.Data2VecVisionSelfAttention


VIT = FamilySpec(
    name="vit",
    model_types=("vit",),
    classes=("ViTForImageClassification",),
    embeddings="vit.embeddings",
    final_norm="vit.layernorm",
    notes="the reference architecture: CLS token, LayerNorm, linear head on CLS",
    **_VIT_ROLES,
)

DEIT = FamilySpec(
    name="deit",
    model_types=("deit",),
    classes=("DeiTForImageClassification",),
    embeddings="deit.embeddings",
    final_norm="deit.layernorm",
    prefix_tokens=2,
    notes="a distillation token after CLS; this head reads CLS only",
    **_VIT_ROLES,
)

DEIT_DISTILLED = FamilySpec(
    name="deit-distilled",
    model_types=("deit",),
    classes=("DeiTForImageClassificationWithTeacher",),
    embeddings="deit.embeddings",
    final_norm="deit.layernorm",
    heads=("cls_classifier", "distillation_classifier"),
    pooling="cls+dist",
    prefix_tokens=2,
    notes="two heads, on CLS and on the distillation token; logits are their average",
    **_VIT_ROLES,
)

BEIT = FamilySpec(
    name="beit",
    model_types=("beit",),
    classes=("BeitForImageClassification",),
    embeddings="beit.embeddings",
    final_norm="beit.layernorm",
    notes="layer scale, relative position bias in the scores, mean pooling of patch tokens + LayerNorm",
    **_BEIT_ROLES,
)

DATA2VEC_VISION = FamilySpec(
    name="data2vec-vision",
    model_types=("data2vec-vision",),
    classes=("Data2VecVisionForImageClassification",),
    embeddings="data2vec_vision.embeddings",
    final_norm="data2vec_vision.layernorm",
    attention="attention.attention",
    query="attention.attention.query",
    key="attention.attention.key",
    value="attention.attention.value",
    out="attention.output.dense",
    mlp_in="intermediate.dense",
    mlp_out="output.dense",
    eager_attention=_data2vec_eager_attention,
    probs_tap="attention.attention.dropout",
    notes="BEiT's architecture; attention is a fixed module class, so hfrel swaps in its eager class",
    **_BEIT_ROLES,
)

DINOV2 = FamilySpec(
    name="dinov2",
    model_types=("dinov2",),
    classes=("Dinov2ForImageClassification",),
    embeddings="dinov2.embeddings",
    final_norm="dinov2.layernorm",
    pooling="cls+mean",
    notes="layer scale, optional SwiGLU MLP, head on [CLS ; mean of patch tokens], any image size",
    **_DINOV2_ROLES,
)

DINOV2_REGISTERS = FamilySpec(
    name="dinov2-registers",
    model_types=("dinov2_with_registers",),
    classes=("Dinov2WithRegistersForImageClassification",),
    embeddings="dinov2_with_registers.embeddings",
    final_norm="dinov2_with_registers.layernorm",
    pooling="cls+mean",
    prefix_tokens=_cls_and_registers,
    notes="DINOv2 plus register tokens between CLS and the patches",
    **_DINOV2_ROLES,
)

VIT_MSN = FamilySpec(
    name="vit-msn",
    model_types=("vit_msn",),
    classes=("ViTMSNForImageClassification",),
    embeddings="vit.embeddings",
    final_norm="vit.layernorm",
    notes="ViT's architecture (MSN self-supervised pretraining); linear head on CLS",
    **_VIT_ROLES,
)

IJEPA = FamilySpec(
    name="ijepa",
    model_types=("ijepa",),
    classes=("IJepaForImageClassification",),
    embeddings="ijepa.embeddings",
    final_norm="ijepa.layernorm",
    pooling="mean",
    prefix_tokens=0,
    notes="ViT blocks without a CLS token; head on the mean of all (patch) tokens",
    **_VIT_ROLES,
)

# Block roles of the CLIP-shaped towers (CLIP, MetaCLIP 2, SigLIP; image and text towers alike).
CLIP_BLOCK_ROLES = dict(
    attention="self_attn",
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    out="self_attn.out_proj",
)
# The same inside a classifier, whose vision settings live in `config.vision_config`.
_CLIP_ROLES = dict(vision_config="vision_config", **CLIP_BLOCK_ROLES)

CLIP = FamilySpec(
    name="clip",
    model_types=("clip",),
    classes=("CLIPForImageClassification",),
    embeddings="vision_model.embeddings",
    final_norm=None,
    pooling="mean",
    notes="the CLIP vision tower: pre-LayerNorm on the embeddings, quick-GELU, head on the mean of patch tokens",
    **_CLIP_ROLES,
)

METACLIP_2 = FamilySpec(
    name="metaclip-2",
    model_types=("metaclip_2",),
    classes=("MetaClip2ForImageClassification",),
    embeddings="vision_model.embeddings",
    final_norm=None,
    pooling="mean",
    notes="CLIP's vision tower (MetaCLIP 2 training); head on the mean of patch tokens",
    **_CLIP_ROLES,
)

SIGLIP = FamilySpec(
    name="siglip",
    model_types=("siglip",),
    classes=("SiglipForImageClassification",),
    embeddings="vision_model.embeddings",
    final_norm="vision_model.post_layernorm",
    pooling="mean",
    prefix_tokens=0,
    notes="no CLS token; head on the mean of all tokens after the post-LayerNorm (the attention-pooling "
    "probe of the vision tower is not read by this head)",
    **_CLIP_ROLES,
)

SIGLIP2 = FamilySpec(
    name="siglip2",
    model_types=("siglip2",),
    classes=("Siglip2ForImageClassification",),
    embeddings="vision_model.embeddings",
    final_norm="vision_model.post_layernorm",
    pooling="mean",
    prefix_tokens=0,
    interpolation="always",
    patch_layout="naflex",
    notes="NaFlex: each image at its own aspect ratio, cut into patches by the processor and padded; no CLS "
    "token; head on the mean of each image's real tokens",
    **_CLIP_ROLES,
)


def _absolute_positions_need_flag(config: object) -> str:
    return "flag" if getattr(config, "use_absolute_embeddings", False) else "always"


def _swinv2_eager_attention() -> type:
    from transformers.models.swinv2 import modeling_swinv2

    return modeling_swinv2.Swinv2SelfAttention


# Swin and SwinV2: windowed attention, no CLS, head on the mean of the last stage's tokens; any image size
# unless the model has absolute position embeddings.
_SWIN_LAYOUT = dict(
    windows=swin_windows,
    pooling="mean",
    prefix_tokens=0,
    interpolation=_absolute_positions_need_flag,
)


SWIN = FamilySpec(
    name="swin",
    model_types=("swin",),
    classes=("SwinForImageClassification",),
    embeddings="swin.embeddings",
    final_norm="swin.layernorm",
    stages="swin.encoder.layers",
    embedding_norm="swin.embeddings.norm",
    size_check=swin_size_problem,
    notes="hierarchical: shifted-window attention, 2x2 patch merges between stages, head on the mean of the "
    "last stage's tokens",
    **_SWIN_LAYOUT,
)

SWINV2 = FamilySpec(
    name="swinv2",
    model_types=("swinv2",),
    classes=("Swinv2ForImageClassification",),
    embeddings="swinv2.embeddings",
    final_norm="swinv2.layernorm",
    stages="swinv2.encoder.layers",
    embedding_norm="swinv2.embeddings.norm",
    attention="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    out="attention.output.dense",
    mlp_in="intermediate.dense",
    mlp_out="output.dense",
    eager_attention=_swinv2_eager_attention,
    probs_tap="attention.self.dropout",
    branch_norms=("layernorm_before", "layernorm_after"),
    cosine_scores=True,
    notes="Swin with post-norm residual branches, cosine attention with a learned scale and a continuous "
    "position bias; its attention is a fixed module class (probabilities read from its dropout)",
    **_SWIN_LAYOUT,
)

# Backbones without a head: explained with `target=`; `pooling` names the tokens the model pools
# (its pooler_output), which the rollout-type methods read.

VIT_BACKBONE = FamilySpec(
    name="vit-backbone",
    model_types=("vit",),
    classes=("ViTModel",),
    embeddings="embeddings",
    final_norm="layernorm",
    heads=(),
    notes="ViT without a head; pooler_output is read from CLS",
    **_VIT_ROLES,
)

DEIT_BACKBONE = FamilySpec(
    name="deit-backbone",
    model_types=("deit",),
    classes=("DeiTModel",),
    embeddings="embeddings",
    final_norm="layernorm",
    heads=(),
    prefix_tokens=2,
    notes="DeiT without a head; pooler_output is read from CLS",
    **_VIT_ROLES,
)

BEIT_BACKBONE = FamilySpec(
    name="beit-backbone",
    model_types=("beit",),
    classes=("BeitModel",),
    embeddings="embeddings",
    final_norm="layernorm",
    heads=(),
    notes="BEiT without a head; pooler_output is the mean of the patch tokens (use_mean_pooling) or CLS",
    **_BEIT_ROLES,
)

DINOV2_BACKBONE = FamilySpec(
    name="dinov2-backbone",
    model_types=("dinov2",),
    classes=("Dinov2Model",),
    embeddings="embeddings",
    final_norm="layernorm",
    heads=(),
    notes="DINOv2 without a head; pooler_output is CLS",
    **_DINOV2_ROLES,
)

DINOV2_REGISTERS_BACKBONE = FamilySpec(
    name="dinov2-registers-backbone",
    model_types=("dinov2_with_registers",),
    classes=("Dinov2WithRegistersModel",),
    embeddings="embeddings",
    final_norm="layernorm",
    heads=(),
    prefix_tokens=_cls_and_registers,
    notes="DINOv2 with registers, without a head; pooler_output is CLS",
    **_DINOV2_ROLES,
)

CLIP_VISION = FamilySpec(
    name="clip-vision",
    model_types=("clip_vision_model",),
    classes=("CLIPVisionModel", "CLIPVisionModelWithProjection"),
    embeddings="vision_model.embeddings|embeddings",
    final_norm=None,
    heads=(),
    notes="the CLIP vision tower alone; pooler_output (and image_embeds) come from CLS after post_layernorm",
    **CLIP_BLOCK_ROLES,
)

SIGLIP_VISION = FamilySpec(
    name="siglip-vision",
    model_types=("siglip_vision_model",),
    classes=("SiglipVisionModel",),
    embeddings="vision_model.embeddings|embeddings",
    final_norm="vision_model.post_layernorm|post_layernorm",
    heads=(),
    pooling="probe",
    probe="vision_model.head|head",
    prefix_tokens=0,
    notes="the SigLIP vision tower: no CLS; pooler_output is an attention-pooling probe over all tokens",
    **CLIP_BLOCK_ROLES,
)

BUILTIN_FAMILIES = (
    VIT,
    DEIT,
    DEIT_DISTILLED,
    BEIT,
    DATA2VEC_VISION,
    DINOV2,
    DINOV2_REGISTERS,
    CLIP,
    VIT_MSN,
    IJEPA,
    METACLIP_2,
    SIGLIP,
    SIGLIP2,
    VIT_BACKBONE,
    DEIT_BACKBONE,
    BEIT_BACKBONE,
    DINOV2_BACKBONE,
    DINOV2_REGISTERS_BACKBONE,
    CLIP_VISION,
    SIGLIP_VISION,
    SWIN,
    SWINV2,
)

for _spec in BUILTIN_FAMILIES:
    register_family(_spec)
