"""Train a small Swin on the built-in synthetic scenes, the same way the demo ViT is trained.

    python examples/train_swin_model.py [--out DIR] [--steps N] [--threads T]
    python examples/class_specificity.py --model DIR      # then: are its maps class-specific?

Three stages of shifted-window attention (16x16, 8x8 and 4x4 tokens of a 64 px scene, 4 px patches,
4x4 windows), two patch merges, a head on the mean of the last stage. Fresh scenes every step from
the demo model's training seed: half single objects (target: its class), half two objects (target:
1/2 each), AdamW with warm-up and cosine decay, plain torch on the CPU. Prints the accuracy on
held-out single-object scenes, the share of held-out two-object scenes whose two classes are the top
two, and the wall and CPU time. docs/results.md reports a run and its class-specificity.
"""

from __future__ import annotations

from pathlib import Path

import torch
from train_demo_model import parse_training_arguments, train
from transformers import SwinConfig, SwinForImageClassification

from hfrel.datasets import CLASS_NAMES, IMAGE_SIZE


def build_model(seed: int) -> SwinForImageClassification:
    """64x64 input, 4x4 patches (a 16x16 grid), 4x4 windows, stages of 2-2-2 blocks of width 32-64-128."""
    torch.manual_seed(seed)
    config = SwinConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        embed_dim=32,
        depths=[2, 2, 2],
        num_heads=[2, 4, 8],
        window_size=4,
        mlp_ratio=2.0,
        drop_path_rate=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )
    model = SwinForImageClassification(config)
    model.set_attn_implementation("eager")  # faster than sdpa on the CPU for 16-token windows
    return model


def main() -> None:
    train(parse_training_arguments(__doc__.splitlines()[0], out=Path("hfrel-out/swin_model"), lr=2e-3), build_model)


if __name__ == "__main__":
    main()
