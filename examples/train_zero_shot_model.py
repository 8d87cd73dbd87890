"""Train the zero-shot demo model hfrel ships: a tiny CLIP that matches synthetic scenes to prompts.

    python examples/train_zero_shot_model.py [--out DIR] [--steps N] [--threads T]

A `CLIPModel` built from a config (a 4-block ViT image tower, a 2-block text tower) with a word-level
tokenizer over the captions' vocabulary, both saved with a `CLIPProcessor`, so the folder loads like
any CLIP checkpoint (`CLIPModel.from_pretrained`, `AutoProcessor.from_pretrained`). Plain torch on the
CPU, fresh scenes for every step: half of each batch single objects, half two objects. Each step
captions the six classes from randomly drawn templates ("a red disk", "a photo of a ring", ...), and
the loss is the cross-entropy of each image's `logits_per_image` over the six captions, against 1 for
its object's class (1/2 for each of a two-object scene's classes). Then the zero-shot accuracy with
the prompts "a photo of a {shape}" on held-out scenes, and the wall and CPU time. The defaults
reproduce the model in hfrel/datasets/zero_shot_model (write there with
`--out hfrel/datasets/zero_shot_model`); runs are deterministic for a given machine and thread count.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from torch.nn import functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

from hfrel.datasets import CLASS_NAMES, IMAGE_SIZE, make_scenes
from hfrel.datasets._demo_model import EVALUATION_SEED, TRAINING_SEED, ZERO_SHOT_TEMPLATE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import batches, fit, normalise, top_k_rate, weights_digest

COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
"""The hue family of each class, in CLASS_NAMES order (hfrel/datasets/_scenes.py)."""

TEMPLATES = (
    "a {shape}",
    "a {colour} {shape}",
    "a photo of a {shape}",
    "a photo of a {colour} {shape}",
    "a picture of a {shape}",
    "the {shape}",
)
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
MAX_TOKENS = 8  # BOS + at most six words + EOS


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level: lower-cased words split on spaces, BOS and EOS around them, EOS also the padding."""
    words = sorted({w for t in TEMPLATES for w in t.split() if "{" not in w} | set(COLOURS) | set(CLASS_NAMES))
    vocab = {token: index for index, token in enumerate([BOS, EOS, UNK, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_TOKENS,
    )


def build_model(seed: int, vocab_size: int) -> CLIPModel:
    """Image tower: 64x64 input, 8x8 patches, 4 blocks of width 64; text tower: 2 blocks of width 32."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        vision_config=dict(
            image_size=IMAGE_SIZE,
            patch_size=8,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
        ),
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        projection_dim=32,
    )
    model = CLIPModel(config)
    model.set_attn_implementation("eager")  # faster than sdpa on the CPU for so few tokens; same arithmetic
    return model


def build_processor(tokenizer: PreTrainedTokenizerFast) -> CLIPProcessor:
    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],  # what `normalise` does to the scenes
        image_std=[0.5, 0.5, 0.5],
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def captions(rng: random.Random) -> list[str]:
    """One caption per class, each from a template drawn at random."""
    return [
        rng.choice(TEMPLATES).format(shape=shape, colour=colour)
        for shape, colour in zip(CLASS_NAMES, COLOURS, strict=True)
    ]


@torch.no_grad()
def zero_shot(model: CLIPModel, tokenizer: PreTrainedTokenizerFast, images: torch.Tensor) -> torch.Tensor:
    """logits_per_image (N, 6) against the prompts "a photo of a {shape}"."""
    model.eval()
    text = tokenizer([ZERO_SHOT_TEMPLATE.format(shape) for shape in CLASS_NAMES], padding=True, return_tensors="pt")
    return torch.cat([model(pixel_values=normalise(chunk), **text).logits_per_image for chunk in images.split(500)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("hfrel-out/zero_shot_model"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the bundled weights: 1)")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out single-object scenes to test on")
    args = parser.parse_args()
    if args.steps < 1 or args.batch < 2 or args.threads < 1:
        parser.error("--steps, --batch (>= 2) and --threads must be positive")

    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    tokenizer = build_tokenizer()
    model = build_model(TRAINING_SEED, len(tokenizer))
    rng = random.Random(TRAINING_SEED)

    def loss_of(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        text = tokenizer(captions(rng), padding=True, return_tensors="pt")
        logits = model(pixel_values=normalise(images), **text).logits_per_image  # (batch, 6)
        return F.cross_entropy(logits, targets)

    @torch.no_grad()
    def cap_temperature() -> None:
        model.logit_scale.clamp_(max=math.log(100.0))  # CLIP's cap on the temperature

    data = batches(args.steps, args.batch, pairs=args.batch // 2)
    fit(model, data, loss_of, steps=args.steps, lr=args.lr, started=wall, after_step=cap_temperature)

    held_out = make_scenes(args.held_out, seed=EVALUATION_SEED)
    accuracy = (zero_shot(model, tokenizer, held_out.images).argmax(-1) == held_out.labels[:, 0]).float().mean()
    two = make_scenes(args.held_out // 4, objects=2, seed=EVALUATION_SEED)
    both = top_k_rate(zero_shot(model, tokenizer, two.images), two.labels)
    digest = weights_digest(model)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    build_processor(tokenizer).save_pretrained(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(
        f"zero-shot accuracy: {accuracy:.2%} on {args.held_out} held-out single-object scenes "
        f"(seed {EVALUATION_SEED}), prompts '{ZERO_SHOT_TEMPLATE.format('<shape>')}'"
    )
    print(f"held-out two-object scenes whose two classes are the top two prompts: {both:.2%} of {len(two)}")
    print(
        f"wall time {time.perf_counter() - wall:.0f} s, CPU time {time.process_time() - cpu:.0f} s "
        f"({args.threads} threads, {args.steps} steps of {args.batch} scenes, half with two objects)"
    )
    print(f"saved to {args.out} ({size / 1e6:.2f} MB, weights sha256 {digest})")


if __name__ == "__main__":
    main()
