"""Image–text models: two towers (each a family spec) meeting in a scaled cosine; one spec each.

A prompt's logit is `logits_per_image[b, k] = s * <u_b, v_k> (+ bias)`, with `u`, `v` the normalised
embeddings of the image and text towers and `s = exp(logit_scale)`. The explainer resolves both towers,
records each on its own tape and explains one target; nothing in the walk knows which model it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from hfrel.models._families import CLIP_BLOCK_ROLES
from hfrel.models._spec import FamilySpec

# What every image tower here shares: CLIP-shaped blocks under `vision_model`, settings in `vision_config`.
_IMAGE_TOWER = dict(
    tower="vision_model",
    vision_config="vision_config",
    embeddings="vision_model.embeddings",
    **CLIP_BLOCK_ROLES,
)
# What every text tower here shares: one token per prompt read after `final_layer_norm`, no prefix tokens.
_TEXT_TOWER = dict(
    tower="text_model",
    modality="text",
    vision_config="text_config",
    embeddings="text_model.embeddings",
    final_norm="text_model.final_layer_norm",
    pooling="token",
    prefix_tokens=0,
    **CLIP_BLOCK_ROLES,
)


@dataclass(frozen=True)
class ImageTextSpec:
    """An image–text model: its two towers and the head that joins them."""

    name: str
    model_types: tuple[str, ...]
    classes: tuple[str, ...]
    image: FamilySpec
    """The image tower; its `heads` is the image projection (none when the pooled output is the embedding)."""
    text: FamilySpec
    """The text tower (modality "text", pooling "token"); its `heads` is the text projection."""
    text_readout: Callable[[torch.Tensor, object], torch.Tensor]
    """(input_ids (B, L), text config) -> the position each prompt's embedding is read from (B,)."""
    probabilities: Literal["softmax", "sigmoid"]
    """How prompt logits become probabilities: softmax over prompts (CLIP) or a sigmoid each (SigLIP)."""
    text_padding: Literal["longest", "max_length"] = "longest"
    """How `hfrel explain --text` pads prompts: SigLIP was trained on prompts padded to its full length."""
    logit_scale: str = "logit_scale"
    logit_bias: str | None = None
    notes: str = field(default="", compare=False)


def first_eos(input_ids: torch.Tensor, config: object) -> torch.Tensor:
    """CLIP's rule: the first EOS token (or, for configs with the legacy eos_token_id 2, the largest id)."""
    eos = getattr(config, "eos_token_id", None)
    if eos == 2:
        return input_ids.to(torch.int).argmax(dim=-1)
    return (input_ids == eos).to(torch.int).argmax(dim=-1)


def last_token(input_ids: torch.Tensor, config: object) -> torch.Tensor:
    """SigLIP's rule: the last token of the (padded) sequence."""
    return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)


def padding_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config: object) -> torch.Tensor:
    """True at padding tokens: where `attention_mask` is 0; without one, the trailing run of pad tokens
    (its first token kept when the pad token is also the EOS token, as in SigLIP's tokenizer)."""
    if attention_mask is not None:
        return attention_mask == 0
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        return torch.zeros_like(input_ids, dtype=torch.bool)
    is_pad = input_ids == pad
    trailing = is_pad.flip(-1).to(torch.int).cumprod(dim=-1).flip(-1).bool()
    if pad == getattr(config, "eos_token_id", None):
        first = trailing & ~torch.cat([torch.zeros_like(trailing[:, :1]), trailing[:, :-1]], dim=-1)
        trailing = trailing & ~first
    return trailing


def _clip_like(name: str, model_type: str, model_class: str, notes: str) -> ImageTextSpec:
    image = FamilySpec(
        name=f"{name}-image",
        model_types=(model_type,),
        classes=(model_class,),
        final_norm=None,
        heads=("visual_projection",),
        notes="CLS after post_layernorm, then the visual projection",
        **_IMAGE_TOWER,
    )
    text = FamilySpec(
        name=f"{name}-text",
        model_types=(model_type,),
        classes=(model_class,),
        heads=("text_projection",),
        notes="causal mask; EOS token after final_layer_norm, then the text projection",
        **_TEXT_TOWER,
    )
    return ImageTextSpec(
        name=name,
        model_types=(model_type,),
        classes=(model_class,),
        image=image,
        text=text,
        text_readout=first_eos,
        probabilities="softmax",
        notes=notes,
    )


CLIP_MODEL = _clip_like("clip-model", "clip", "CLIPModel", "image CLS and text EOS, projected, scaled cosine")
METACLIP2_MODEL = _clip_like("metaclip2-model", "metaclip_2", "MetaClip2Model", "CLIP's towers and head")

SIGLIP_MODEL = ImageTextSpec(
    name="siglip-model",
    model_types=("siglip",),
    classes=("SiglipModel",),
    image=FamilySpec(
        name="siglip-model-image",
        model_types=("siglip",),
        classes=("SiglipModel",),
        final_norm="vision_model.post_layernorm",
        heads=(),
        pooling="probe",
        probe="vision_model.head",
        prefix_tokens=0,
        notes="no CLS: an attention-pooling probe over all tokens after post_layernorm",
        **_IMAGE_TOWER,
    ),
    text=FamilySpec(
        name="siglip-model-text",
        model_types=("siglip",),
        classes=("SiglipModel",),
        heads=("text_model.head",),
        notes="bidirectional attention; the last token after final_layer_norm, then a linear head",
        **_TEXT_TOWER,
    ),
    text_readout=last_token,
    probabilities="sigmoid",
    text_padding="max_length",
    logit_bias="logit_bias",
    notes="image: attention-pooling probe; text: last token; scaled cosine plus a bias, read with a sigmoid",
)

# SigLIP 2 is SigLIP (head, text tower, probe) with a NaFlex image tower.
_SIGLIP2 = dict(model_types=("siglip2",), classes=("Siglip2Model",))
SIGLIP2_MODEL = replace(
    SIGLIP_MODEL,
    name="siglip2-model",
    image=replace(
        SIGLIP_MODEL.image,
        name="siglip2-model-image",
        interpolation="always",
        patch_layout="naflex",
        notes="NaFlex (each image on its own patch grid); the probe attends over each image's real patches",
        **_SIGLIP2,
    ),
    text=replace(SIGLIP_MODEL.text, name="siglip2-model-text", **_SIGLIP2),
    notes="SigLIP's head and text tower on a NaFlex image tower",
    **_SIGLIP2,
)

_REGISTRY: list[ImageTextSpec] = [CLIP_MODEL, METACLIP2_MODEL, SIGLIP_MODEL, SIGLIP2_MODEL]


def image_text_specs() -> list[ImageTextSpec]:
    return list(_REGISTRY)


def find_image_text_spec(model: nn.Module) -> ImageTextSpec | None:
    """The image–text spec for this model, or None if it is not an image–text model hfrel knows."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    lineage = {cls.__name__ for cls in type(model).__mro__}
    for spec in _REGISTRY:
        if model_type in spec.model_types and lineage.intersection(spec.classes):
            return spec
    return None
