"""Tiny models of every supported family, built offline from configs (hidden 32, 2 blocks, 32-pixel images).

`CASES` is the table the shared family suite runs over: adding a family means adding one entry here.
Weights are drawn with a large std so that attention is far from uniform and maps are informative.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as tf

Case = tuple[type, object]  # (model class, config)

COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    num_labels=5,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)


def _vit() -> Case:
    return tf.ViTForImageClassification, tf.ViTConfig(**COMMON)


def _deit() -> Case:
    return tf.DeiTForImageClassification, tf.DeiTConfig(**COMMON)


def _deit_distilled() -> Case:
    return tf.DeiTForImageClassificationWithTeacher, tf.DeiTConfig(**COMMON)


def _beit() -> Case:
    config = tf.BeitConfig(**COMMON, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.5)
    return tf.BeitForImageClassification, config


def _beit_cls() -> Case:
    """BEiT with a CLS head, absolute positions and one relative position bias shared by all blocks."""
    config = tf.BeitConfig(
        **COMMON,
        use_mean_pooling=False,
        use_absolute_position_embeddings=True,
        use_shared_relative_position_bias=True,
        layer_scale_init_value=0.0,
    )
    return tf.BeitForImageClassification, config


def _data2vec_vision() -> Case:
    config = tf.Data2VecVisionConfig(
        **COMMON, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.5
    )
    return tf.Data2VecVisionForImageClassification, config


def _dinov2() -> Case:
    config = tf.Dinov2Config(**{k: v for k, v in COMMON.items() if k != "intermediate_size"}, mlp_ratio=2)
    return tf.Dinov2ForImageClassification, config


def _dinov2_swiglu() -> Case:
    config = tf.Dinov2Config(
        **{k: v for k, v in COMMON.items() if k != "intermediate_size"}, mlp_ratio=2, use_swiglu_ffn=True
    )
    return tf.Dinov2ForImageClassification, config


def _dinov2_registers() -> Case:
    config = tf.Dinov2WithRegistersConfig(
        **{k: v for k, v in COMMON.items() if k != "intermediate_size"}, mlp_ratio=2, num_register_tokens=3
    )
    return tf.Dinov2WithRegistersForImageClassification, config


def _towers() -> tuple[dict, dict]:
    """Vision and text sub-configs of the tiny image-text families (CLIP, MetaCLIP 2, SigLIP)."""
    vision = {k: v for k, v in COMMON.items() if k not in ("num_labels", "hidden_dropout_prob")}
    vision["attention_dropout"] = vision.pop("attention_probs_dropout_prob")
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64)
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return vision, text


def _clip() -> Case:
    vision, text = _towers()
    config = tf.CLIPConfig(vision_config=vision, text_config=text, num_labels=COMMON["num_labels"])
    return tf.CLIPForImageClassification, config


def _metaclip_2() -> Case:
    vision, text = _towers()
    config = tf.MetaClip2Config(vision_config=vision, text_config=text, num_labels=COMMON["num_labels"])
    return tf.MetaClip2ForImageClassification, config


def _siglip() -> Case:
    vision, text = _towers()
    config = tf.SiglipConfig(vision_config=vision, text_config=text, num_labels=COMMON["num_labels"])
    return tf.SiglipForImageClassification, config


def _vit_msn() -> Case:
    return tf.ViTMSNForImageClassification, tf.ViTMSNConfig(**COMMON)


def _ijepa() -> Case:
    return tf.IJepaForImageClassification, tf.IJepaConfig(**COMMON)


CASES: dict[str, Callable[[], Case]] = {
    "vit": _vit,
    "deit": _deit,
    "deit-distilled": _deit_distilled,
    "beit": _beit,
    "beit-cls": _beit_cls,
    "data2vec-vision": _data2vec_vision,
    "dinov2": _dinov2,
    "dinov2-swiglu": _dinov2_swiglu,
    "dinov2-registers": _dinov2_registers,
    "clip": _clip,
    "vit-msn": _vit_msn,
    "ijepa": _ijepa,
    "metaclip-2": _metaclip_2,
    "siglip": _siglip,
}


SWIN_COMMON = dict(
    embed_dim=16,
    depths=[2, 2, 2],
    num_heads=[2, 2, 4],
    image_size=32,
    patch_size=2,
    window_size=4,
    mlp_ratio=2.0,
    num_labels=5,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)


def _swin() -> Case:
    """Three stages (16x16, 8x8, 4x4 tokens), 4x4 windows shifted by 2 in every second block."""
    return tf.SwinForImageClassification, tf.SwinConfig(**SWIN_COMMON)


def _swin_absolute() -> Case:
    """Swin with absolute position embeddings (other image sizes need interpolate_pos_encoding)."""
    return tf.SwinForImageClassification, tf.SwinConfig(**SWIN_COMMON, use_absolute_embeddings=True)


def _swinv2() -> Case:
    return tf.Swinv2ForImageClassification, tf.Swinv2Config(**SWIN_COMMON)


HIERARCHICAL: dict[str, Callable[[], Case]] = {
    "swin": _swin,
    "swin-absolute": _swin_absolute,
    "swinv2": _swinv2,
}
"""Hierarchical families (stages, windows, merges): their own suite, tests/test_swin.py."""


def _siglip2() -> Case:
    vision, text = _towers()
    del vision["image_size"]
    vision["num_patches"] = 16  # a 4 x 4 grid of position embeddings, resized to each image's own grid
    config = tf.Siglip2Config(vision_config=vision, text_config=text, num_labels=COMMON["num_labels"])
    return tf.Siglip2ForImageClassification, config


NAFLEX_CASES: dict[str, Callable[[], Case]] = {"siglip2": _siglip2}
"""NaFlex models take images already cut into patches, each at its own aspect ratio (tests/test_naflex.py)."""


def _vision(config_class: type, **extra: object) -> object:
    return config_class(**{k: v for k, v in COMMON.items() if k != "num_labels"}, **extra)


def _clip_vision_config() -> object:
    vision = {k: v for k, v in COMMON.items() if k not in ("num_labels", "hidden_dropout_prob")}
    vision["attention_dropout"] = vision.pop("attention_probs_dropout_prob")
    return tf.CLIPVisionConfig(**vision, projection_dim=16)


def _siglip_vision_config() -> object:
    vision = {k: v for k, v in COMMON.items() if k not in ("num_labels", "hidden_dropout_prob")}
    vision["attention_dropout"] = vision.pop("attention_probs_dropout_prob")
    return tf.SiglipVisionConfig(**vision)


def _dinov2_config(config_class: type, **extra: object) -> object:
    keep = {k: v for k, v in COMMON.items() if k not in ("num_labels", "intermediate_size")}
    return config_class(**keep, mlp_ratio=2, **extra)


BACKBONES: dict[str, Callable[[], Case]] = {
    "vit-backbone": lambda: (tf.ViTModel, _vision(tf.ViTConfig)),
    "deit-backbone": lambda: (tf.DeiTModel, _vision(tf.DeiTConfig)),
    "beit-backbone": lambda: (
        tf.BeitModel,
        _vision(tf.BeitConfig, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.5),
    ),
    "dinov2-backbone": lambda: (tf.Dinov2Model, _dinov2_config(tf.Dinov2Config)),
    "dinov2-registers-backbone": lambda: (
        tf.Dinov2WithRegistersModel,
        _dinov2_config(tf.Dinov2WithRegistersConfig, num_register_tokens=3),
    ),
    "clip-vision": lambda: (tf.CLIPVisionModel, _clip_vision_config()),
    "clip-vision-projection": lambda: (tf.CLIPVisionModelWithProjection, _clip_vision_config()),
    "siglip-vision": lambda: (tf.SiglipVisionModel, _siglip_vision_config()),
}
"""Backbones without a head, explained with `target=`."""


def _image_text_configs() -> tuple[dict, dict]:
    vision = {k: v for k, v in COMMON.items() if k not in ("num_labels", "hidden_dropout_prob")}
    vision["attention_dropout"] = vision.pop("attention_probs_dropout_prob")
    text = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=40)
    text.update(max_position_embeddings=16, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return vision, text


def _clip_model() -> Case:
    vision, text = _image_text_configs()
    return tf.CLIPModel, tf.CLIPConfig(vision_config=vision, text_config=text, projection_dim=12)


def _metaclip2_model() -> Case:
    vision, text = _image_text_configs()
    return tf.MetaClip2Model, tf.MetaClip2Config(vision_config=vision, text_config=text, projection_dim=12)


def _siglip_model() -> Case:
    vision, text = _image_text_configs()
    text["projection_size"] = 32  # SigLIP's text head maps to the vision width
    return tf.SiglipModel, tf.SiglipConfig(vision_config=vision, text_config=text)


def _siglip2_model() -> Case:
    vision, text = _image_text_configs()
    del vision["image_size"]
    vision["num_patches"] = 16  # a 4 x 4 grid of position embeddings, resized to each image's own grid
    text["projection_size"] = 32
    return tf.Siglip2Model, tf.Siglip2Config(vision_config=vision, text_config=text)


IMAGE_TEXT: dict[str, Callable[[], Case]] = {
    "clip-model": _clip_model,
    "metaclip2-model": _metaclip2_model,
    "siglip-model": _siglip_model,
}
NAFLEX_IMAGE_TEXT: dict[str, Callable[[], Case]] = {"siglip2-model": _siglip2_model}
"""Image–text models with a NaFlex image tower: images already cut into patches (tests/test_naflex.py's batches)."""
"""Image–text models, explained against prompts (`prompts()` gives token ids for them)."""


def prompts(name: str) -> dict[str, torch.Tensor]:
    """Three padded prompts of 3, 5 and 2 words as a processor would give them: BOS words EOS, then padding."""
    words = [[7, 8, 9], [10, 11, 12, 13, 14], [15, 16]]
    length = 2 + max(len(w) for w in words)
    ids = torch.zeros(len(words), length, dtype=torch.long)
    mask = torch.zeros(len(words), length, dtype=torch.long)
    for row, w in enumerate(words):
        ids[row, : len(w) + 2] = torch.tensor([2, *w, 3])
        mask[row, : len(w) + 2] = 1
    return {"input_ids": ids, "attention_mask": mask}


TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "a", "photo", "of", "cat", "dog", "red", "disk", "ring"]


def tokenizer() -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer built offline (`TOKENS`): <s> words </s>, padded with <pad>; ids as `prompts` uses."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {word: index for index, word in enumerate(TOKENS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def image_text_processor(name: str) -> object:
    """The processor of an image–text case: the tiny tokenizer and an image processor to 32x32 (resize 40, crop)."""
    image_processor = tf.CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
    processor_class = tf.SiglipProcessor if name.startswith("siglip") else tf.CLIPProcessor
    return processor_class(image_processor=image_processor, tokenizer=tokenizer())


def build(name: str, seed: int = 0, std: float = 0.3, attn_implementation: str | None = None) -> torch.nn.Module:
    """A tiny model of case `name`, with seeded random weights, in eval mode (default attention: sdpa)."""
    torch.manual_seed(seed)
    model_class, config = {**CASES, **BACKBONES, **NAFLEX_CASES, **HIERARCHICAL, **IMAGE_TEXT, **NAFLEX_IMAGE_TEXT}[
        name
    ]()
    if attn_implementation is None:
        model = model_class(config)
    else:
        model = model_class._from_config(config, attn_implementation=attn_implementation)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param.dim() >= 2 or any(
                k in param_name for k in ("token", "position", "embedding", "lambda", "relative_position_bias_table")
            ):
                param.normal_(0.0, std)
            if param_name in ("logit_scale", "logit_bias"):
                param.fill_(1.0 if param_name == "logit_scale" else -1.0)
    return model.eval()


class RandomImages(torch.utils.data.Dataset):
    """`count` random 32x32 images with labels among the tiny models' 5 classes, for `Trainer` runs."""

    def __init__(self, count: int) -> None:
        generator = torch.Generator().manual_seed(5)
        self.pixels = torch.randn(count, 3, 32, 32, generator=generator)
        self.labels = torch.randint(0, 5, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}
