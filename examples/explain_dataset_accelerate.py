"""Explain a dataset split with `hfrel.explain_images`, on one process or on several, offline.

    python examples/explain_dataset_accelerate.py --out DIR
    accelerate launch --multi_gpu --num_processes 2 examples/explain_dataset_accelerate.py --out DIR

Launched, each process explains every second example and the main process writes DIR/summary.json
and DIR/index.json; the files are those of a one-process run. Without GPUs, `--multi_gpu` still
starts 2 CPU processes (torchrun's launcher, gloo); `accelerate launch --cpu` starts only one unless
MPI is set up. Run it again: finished examples are reused, not recomputed.

With `datasets` installed, pass a split instead of the list built here, e.g.
`load_dataset("<name>", split="validation")`: anything indexable whose items are dicts works.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

import hfrel

CLASSES = {0: "red square", 1: "green square", 2: "blue square"}


def examples(count: int) -> list[dict]:
    """A stand-in for a `datasets` split: dicts with a PIL "image" and an int "label" column."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        label = index % len(CLASSES)
        pixels = rng.integers(0, 80, (48, 48, 3), dtype=np.uint8)  # a dark, noisy background
        top, left = rng.integers(0, 24, size=2)
        pixels[top : top + 24, left : left + 24, label] = 230  # a square in the class's colour
        rows.append({"image": Image.fromarray(pixels), "label": label})
    return rows


def model() -> ViTForImageClassification:
    """A small ViT from a seeded config, so that every process builds the same weights. With a real
    checkpoint: `AutoModelForImageClassification.from_pretrained("<hub id or folder>")`."""
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=32,
        patch_size=8,
        num_labels=len(CLASSES),
        id2label=CLASSES,
        label2id={name: index for index, name in CLASSES.items()},
    )
    return ViTForImageClassification(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("hfrel-out/dataset"))
    parser.add_argument("--examples", type=int, default=12, help="how many examples to build (default 12)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even where there are GPUs")
    args = parser.parse_args()

    # One process per GPU when launched on GPUs (each takes its own), else CPU processes over gloo.
    state = PartialState(cpu=args.cpu or not torch.cuda.is_available())
    classifier = model().to(state.device)
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})

    summary = hfrel.explain_images(
        classifier,
        processor,
        examples(args.examples),
        args.out,
        label_column="label",  # explain each example's own class; without it, the predicted class
        method=["transformer_attribution", "rollout"],
        top_k=3,
        batch_size=4,
        verbose=True,  # print what `hfrel explain` prints
    )
    if state.is_main_process:
        right = sum(image["predictions"][0]["index"] == image["explained"][0]["index"] for image in summary["images"])
        print(f"top-1 agrees with the label on {right} of {summary['explained']} examples (random weights)")
        print(f"see {args.out / 'index.json'} for which process explained which example")


if __name__ == "__main__":
    main()
