"""Quickstart, fully offline: explain a tiny ViT built from a config, and save one figure.

    python examples/quickstart.py [--out DIR]

With a real checkpoint the only change is the first line: `from_pretrained("<hub id or folder>")`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification

import hfrel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("hfrel-out/quickstart"))
    args = parser.parse_args()

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=64,
        patch_size=8,
        num_labels=3,
    )
    model = ViTForImageClassification(config).eval()
    pixel_values = torch.randn(2, 3, 64, 64)

    with hfrel.attach(model) as explainer:
        exp = explainer.explain(pixel_values)  # the paper's method, each image's predicted class
        both = explainer.explain(pixel_values, method=["transformer_attribution", "rollout"])

    print(f"methods: {', '.join(hfrel.methods())}")
    print(f"labels explained: {exp.labels.tolist()}")
    print(f"relevance {tuple(exp.relevance.shape)} on the patch grid, heatmap {tuple(exp.heatmap.shape)} in [0, 1]")
    for name, result in both.items():
        top = result.relevance.flatten(1).argmax(dim=1).tolist()
        print(f"{name:>24}: most relevant patch per image {top}")

    args.out.mkdir(parents=True, exist_ok=True)
    figure = exp.plot((pixel_values - pixel_values.amin()) / (pixel_values.amax() - pixel_values.amin()))
    path = args.out / "quickstart.png"
    figure.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
