"""Tiny models of every supported family, built offline from configs (hidden 32, 2 blocks, 32-pixel images).

`CASES` is the table the shared family suite runs over: adding a family means adding one entry here.
Weights are drawn with a large std so that attention is far from uniform and maps are informative.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as tf

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


def _vit() -> torch.nn.Module:
    return tf.ViTForImageClassification(tf.ViTConfig(**COMMON))


def _deit() -> torch.nn.Module:
    return tf.DeiTForImageClassification(tf.DeiTConfig(**COMMON))


CASES: dict[str, Callable[[], torch.nn.Module]] = {
    "vit": _vit,
    "deit": _deit,
}


def build(name: str, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """A tiny model of family `name`, with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    model = CASES[name]()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param.dim() >= 2 or "token" in param_name or "position" in param_name:
                param.normal_(0.0, std)
    return model.eval()
