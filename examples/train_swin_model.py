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

import argparse
import hashlib
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from train_demo_model import accuracy, batches, build_processor, normalise, top_two_rate
from transformers import SwinConfig, SwinForImageClassification

from hfrel.datasets import CLASS_NAMES, IMAGE_SIZE, make_scenes
from hfrel.datasets._demo_model import EVALUATION_SEED, TRAINING_SEED


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("hfrel-out/swin_model"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--two-object-share", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out single-object scenes to test on")
    args = parser.parse_args()
    if args.steps < 1 or args.batch < 2 or args.threads < 1 or not 0.0 <= args.two_object_share <= 1.0:
        parser.error("--steps, --batch (>= 2) and --threads must be positive, and --two-object-share in [0, 1]")

    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    model = build_model(TRAINING_SEED)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = max(1, args.steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    model.train()
    running = 0.0
    for step, (images, targets) in enumerate(batches(args.steps, args.batch, args.two_object_share)):
        logits = model(normalise(images)).logits
        loss = F.cross_entropy(logits, targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}  loss {running:.4f}  {time.perf_counter() - wall:.0f}s", flush=True)

    held_out = make_scenes(args.held_out, seed=EVALUATION_SEED)
    score = accuracy(model, held_out.images, held_out.labels[:, 0])
    pairs = make_scenes(args.held_out // 4, objects=2, seed=EVALUATION_SEED)
    both = top_two_rate(model, pairs.images, pairs.labels)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.state_dict().values()))
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    build_processor().save_pretrained(args.out)
    size = (args.out / "model.safetensors").stat().st_size
    print(f"held-out accuracy: {score:.2%} on {args.held_out} single-object scenes (seed {EVALUATION_SEED})")
    print(f"held-out two-object scenes whose two classes are the top two: {both:.2%} of {len(pairs)}")
    print(
        f"wall time {time.perf_counter() - wall:.0f} s, CPU time {time.process_time() - cpu:.0f} s "
        f"({args.threads} threads, {args.steps} steps of {args.batch} scenes, {args.two_object_share:.0%} "
        f"with two objects)"
    )
    print(f"saved to {args.out} (model.safetensors: {size / 1e6:.2f} MB, weights sha256 {digest.hexdigest()[:16]})")


if __name__ == "__main__":
    main()
