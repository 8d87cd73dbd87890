"""Train the demo model hfrel ships: a small ViT that names the shape in a synthetic scene.

    python examples/train_demo_model.py [--out DIR] [--steps N] [--threads T]

Plain torch on the CPU, fresh scenes for every step (so it never sees a scene twice): half of each
batch single objects (target: its class), half two objects (target: 1/2 for each class), then the
accuracy on held-out single-object scenes and the wall and CPU time. The two-object half is what
makes the model answer for every object in a scene; trained on single objects only, it learns to
name one object and ignore the other (docs/results.md). The defaults reproduce the model in
hfrel/datasets/demo_model (write there with `--out hfrel/datasets/demo_model`). Runs are
deterministic for a given machine and thread count; other machines reach the same accuracy with
weights that differ in the last bits.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from hfrel.datasets import CLASS_NAMES, IMAGE_SIZE, make_scenes
from hfrel.datasets._demo_model import EVALUATION_SEED, TRAINING_SEED

MEAN = STD = (0.5, 0.5, 0.5)  # what the processor saved with the model divides by


def build_model(seed: int) -> ViTForImageClassification:
    """The architecture: 64x64 input, 8x8 patches (an 8x8 grid), 4 blocks of width 64 with 4 heads."""
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )
    # eager attention: faster than sdpa on the CPU for 65 tokens, and the same arithmetic
    model = ViTForImageClassification(config)
    model.set_attn_implementation("eager")
    return model


def build_processor() -> ViTImageProcessor:
    return ViTImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(MEAN),
        image_std=list(STD),
    )


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Scenes in [0, 1] -> model input, exactly what the saved processor does to their PNGs."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std


@torch.no_grad()
def accuracy(model: ViTForImageClassification, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    predictions = torch.cat([model(normalise(chunk)).logits.argmax(-1) for chunk in images.split(500)])
    return (predictions == labels).float().mean().item()


class SceneStream:
    """Consecutive scenes of the training seed with `objects` objects each, drawn `chunk` at a time."""

    def __init__(self, objects: int, chunk: int = 1024) -> None:
        self.objects, self.chunk = objects, chunk
        self.next_index, self.first = 0, 0
        self.scenes = make_scenes(chunk, objects=objects, seed=TRAINING_SEED)

    def take(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next `count` scenes: images, and soft targets that share 1 equally among the objects' classes."""
        start = self.next_index
        if start + count > self.first + len(self.scenes):
            size = max(self.chunk, count)
            self.first, self.scenes = start, make_scenes(size, objects=self.objects, seed=TRAINING_SEED, start=start)
        self.next_index += count
        window = slice(start - self.first, start - self.first + count)
        labels = self.scenes.labels[window]
        targets = torch.zeros(count, len(CLASS_NAMES)).scatter_(1, labels, 1.0 / self.objects)
        return self.scenes.images[window], targets


def batches(steps: int, batch: int, pairs: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` batches of `batch` fresh scenes: single-object scenes, and `pairs` of each batch with two
    objects whose target shares the probability equally (so the model learns to answer for both)."""
    singles, doubles = SceneStream(objects=1), SceneStream(objects=2)
    for _ in range(steps):
        images, targets = singles.take(batch - pairs)
        if pairs:
            pair_images, pair_targets = doubles.take(pairs)
            images, targets = torch.cat([images, pair_images]), torch.cat([targets, pair_targets])
        yield images, targets


def top_k_rate(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of multi-object scenes (labels (N, K)) whose objects' classes are exactly the top K logits."""
    top = logits.topk(labels.shape[1], dim=-1).indices.sort(dim=-1).values
    return (top == labels.sort(dim=-1).values).all(dim=-1).float().mean().item()


@torch.no_grad()
def top_two_rate(model: ViTForImageClassification, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of multi-object scenes whose objects' classes are exactly the model's top K classes."""
    model.eval()
    return top_k_rate(torch.cat([model(normalise(chunk)).logits for chunk in images.split(500)]), labels)


def fit(
    model: torch.nn.Module,
    data: Iterator[tuple[torch.Tensor, torch.Tensor]],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    lr: float,
    started: float,
    after_step: Callable[[], None] | None = None,
) -> None:
    """The recipe every example model is trained with: AdamW (weight decay 0.05), linear warm-up over the
    first 5% of `steps` then cosine decay to zero, gradients clipped at norm 1; prints the smoothed loss
    every 100 steps. `loss_of(images, targets)` is the model-specific part; `after_step` runs after each update."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    model.train()
    running = 0.0
    for step, (images, targets) in enumerate(data):
        loss = loss_of(images, targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps}  loss {running:.4f}  {time.perf_counter() - started:.0f}s", flush=True)


def weights_digest(model: torch.nn.Module) -> str:
    """The first 16 hex digits of the sha256 of all weights: a run's fingerprint."""
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.state_dict().values()))
    return digest.hexdigest()[:16]


def main() -> None:
    train(parse_training_arguments(__doc__.splitlines()[0], out=Path("hfrel-out/demo_model"), lr=1e-3), build_model)


def parse_training_arguments(description: str, *, out: Path, lr: float) -> argparse.Namespace:
    """The command line of the classifiers trained with `train` (the demo ViT, the Swin example), checked."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument(
        "--two-object-share",
        type=float,
        default=0.5,
        help="share of each batch with two objects, target 1/2 each (0: single objects only)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the bundled demo model was trained so, and CPU kernels' sums can "
        "differ in the last bits with the thread count)",
    )
    parser.add_argument("--held-out", type=int, default=2000, help="held-out single-object scenes to test on")
    args = parser.parse_args()
    if args.steps < 1 or args.batch < 2 or args.threads < 1 or not 0.0 <= args.two_object_share <= 1.0:
        parser.error("--steps, --batch (>= 2) and --threads must be positive, and --two-object-share in [0, 1]")
    return args


def train(args: argparse.Namespace, build: Callable[[int], torch.nn.Module]) -> None:
    """Train `build(TRAINING_SEED)` on fresh scenes as the parsed `args` say, test it, save it with the processor.

    Shared by the demo ViT and the Swin example (examples/train_swin_model.py): same data, schedule and report.
    """
    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    model = build(TRAINING_SEED)
    data = batches(args.steps, args.batch, pairs=round(args.batch * args.two_object_share))

    def loss_of(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(normalise(images)).logits, targets)

    fit(model, data, loss_of, steps=args.steps, lr=args.lr, started=wall)
    held_out = make_scenes(args.held_out, seed=EVALUATION_SEED)
    score = accuracy(model, held_out.images, held_out.labels[:, 0])
    pairs = make_scenes(args.held_out // 4, objects=2, seed=EVALUATION_SEED)
    both = top_two_rate(model, pairs.images, pairs.labels)
    digest = weights_digest(model)
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
    print(f"saved to {args.out} (model.safetensors: {size / 1e6:.2f} MB, weights sha256 {digest})")


if __name__ == "__main__":
    main()
