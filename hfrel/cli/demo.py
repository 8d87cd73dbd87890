"""`hfrel demo`: class-specific maps on the bundled model, offline, in seconds.

Takes a few held-out scenes with two objects each, asks the demo model (a small ViT
trained on synthetic scenes of one or two shapes) for its top classes, and explains
each object's class with every chosen method in one batched call. Writes one panel
per scene: the input, then each method's map for each object's class, so
class-specific maps (the paper's) sit next to class-agnostic ones.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

import hfrel
from hfrel import viz
from hfrel._errors import InputError
from hfrel._methods import METHODS
from hfrel._options import method_names
from hfrel.datasets import (
    CLASS_NAMES,
    ZERO_SHOT_PROMPTS,
    SceneDataset,
    load_demo_model,
    load_zero_shot_model,
    make_scenes,
)
from hfrel.datasets._demo_model import DEMO_SEED
from hfrel.datasets._scores import own_and_other_heat

DEFAULT_METHODS = ("transformer_attribution", "rollout", "attention")
MAX_SCENES = 32


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="explain a few synthetic scenes with the bundled model and write panels (offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("hfrel-out/demo"),
        metavar="DIR",
        help="folder for the panels (default hfrel-out/demo)",
    )
    parser.add_argument(
        "--method",
        nargs="+",
        metavar="M",
        default=list(DEFAULT_METHODS),
        help=f"methods to show, in order (default: {' '.join(DEFAULT_METHODS)}; see `hfrel methods`)",
    )
    parser.add_argument(
        "--scenes", type=int, default=4, metavar="N", help=f"how many scenes (1 to {MAX_SCENES}; default 4)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="S", help="scene seed (default: the held-out demo seed)"
    )
    parser.add_argument(
        "--zero-shot",
        action="store_true",
        help="use the bundled tiny CLIP instead: score each scene against the prompts 'a photo of a {shape}' "
        "and explain both objects' prompts, with each prompt's token relevance",
    )
    parser.set_defaults(run=run)


def _check(methods: list[str], scenes: int, seed: int | None, out: Path) -> list[str]:
    """Refuse bad options before loading anything; returns the methods, each once, in the order given."""
    chosen = method_names(methods, option="--method")
    if not 1 <= scenes <= MAX_SCENES:
        raise InputError(f"--scenes must be between 1 and {MAX_SCENES}, got {scenes}")
    if seed is not None and seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    return list(chosen)


def run(args: argparse.Namespace) -> int:
    methods = _check(args.method, args.scenes, args.seed, args.out)
    transformers_logging.disable_progress_bar()  # a weight-loading bar for a 0.6 MB model is noise here
    seed = DEMO_SEED if args.seed is None else args.seed
    if args.zero_shot:
        return _run_zero_shot(args, methods, seed)
    model, processor = load_demo_model(device="cpu")
    scenes = make_scenes(args.scenes, objects=2, seed=seed)
    pixel_values = processor(list(scenes.uint8()), return_tensors="pt").pixel_values
    with hfrel.attach(model) as explainer:
        results = explainer.explain(pixel_values, scenes.labels, method=methods)

    config = model.config
    print(
        f"demo model: ViT, {config.num_hidden_layers} blocks, {config.image_size}x{config.image_size} input, "
        f"trained on scenes of one or two shapes ({', '.join(CLASS_NAMES)})"
    )
    print(f"{len(scenes)} held-out scenes with two objects each (seed {seed}); explaining both objects' classes\n")
    probabilities = next(iter(results.values())).probabilities
    top = probabilities.topk(3, dim=-1)
    for i in range(len(scenes)):
        objects = " + ".join(CLASS_NAMES[c] for c in scenes.labels[i].tolist())
        ranked = ", ".join(
            f"{CLASS_NAMES[c]} {p:.0%}" for p, c in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True)
        )
        print(f"scene {i}: {objects:<18} top classes: {ranked}")

    _print_specificity(results, methods, scenes.masks, "class")

    paths = _write_panels(args.out, scenes, results, methods, probabilities)
    print(f"\nwrote {len(paths)} panels to {args.out.resolve()}:")
    for path in paths:
        print(f"  {path}")
    return 0


def _run_zero_shot(args: argparse.Namespace, methods: list[str], seed: int) -> int:
    """The same demo with the bundled tiny CLIP: prompts instead of classes, and each prompt's token relevance."""
    model, processor = load_zero_shot_model(device="cpu")
    scenes = make_scenes(args.scenes, objects=2, seed=seed)
    prompts = list(ZERO_SHOT_PROMPTS)
    inputs = processor(text=prompts, images=list(scenes.uint8()), return_tensors="pt", padding=True)
    with hfrel.attach(model) as explainer:
        results = explainer.explain(**inputs, label=scenes.labels, method=methods)

    vision = model.config.vision_config
    print(
        f"zero-shot demo model: tiny CLIP (image tower: ViT, {vision.num_hidden_layers} blocks, {vision.image_size}x"
        f"{vision.image_size} input; a word-level tokenizer), trained on captioned scenes of one or two shapes"
    )
    print(
        f"{len(scenes)} held-out scenes with two objects each (seed {seed}); prompts: {', '.join(map(repr, prompts))}"
    )
    print("explaining both objects' prompts\n")
    probabilities = next(iter(results.values())).logits.float().softmax(dim=-1)  # CLIP: softmax over the prompts
    top = probabilities.topk(3, dim=-1)
    tokenizer = processor.tokenizer
    paper = results.get("transformer_attribution", next(iter(results.values())))
    for i in range(len(scenes)):
        objects = " + ".join(CLASS_NAMES[c] for c in scenes.labels[i].tolist())
        ranked = ", ".join(
            f"'{prompts[c]}' {p:.0%}" for p, c in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True)
        )
        print(f"scene {i}: {objects:<18} top prompts: {ranked}")
        if paper.text_relevance is not None:
            for k, label in enumerate(scenes.labels[i].tolist()):
                ids = inputs["input_ids"][label][inputs["attention_mask"][label].bool()]
                tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
                weights = paper.text_relevance[i, k, : len(tokens)].float()
                shares = weights.clamp(min=0) / weights.clamp(min=0).sum().clamp(min=1e-30)
                shown = " ".join(f"{t}:{w:.0%}" for t, w in zip(tokens, shares.tolist(), strict=True))
                print(f"    token relevance ({paper.method}) for '{prompts[label]}': {shown}")

    _print_specificity(results, methods, scenes.masks, "prompt")

    names = [f"'{p}'" for p in prompts]
    paths = _write_panels(args.out, scenes, results, methods, probabilities, names)
    print(f"\nwrote {len(paths)} panels to {args.out.resolve()}:")
    for path in paths:
        print(f"  {path}")
    return 0


def _print_specificity(results: dict, methods: list[str], masks: torch.Tensor, target: str) -> None:
    """How many maps put more heat on their own `target`'s (class or prompt) object than on the other one."""
    print(f"\nmaps that put more heat on their own {target}'s object than on the other object:")
    width = max(map(len, methods))
    for name in methods:
        own, other = own_and_other_heat(results[name].heatmap, masks)
        specific = int((own > other).sum())
        note = "" if METHODS[name].class_specific else f"  (class-agnostic: the same map for every {target})"
        print(f"  {name:<{width}}  {specific} of {own.numel()}{note}")


def _write_panels(
    out: Path,
    scenes: SceneDataset,
    results: dict[str, hfrel.Explanation],
    methods: list[str],
    probabilities: torch.Tensor,
    names: Sequence[str] = CLASS_NAMES,
) -> list[Path]:
    """One PNG per scene: the input, then for each method the map of each object's class (or prompt)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(scenes)):
        labels = scenes.labels[i].tolist()
        heatmaps, titles = [], []
        for name in methods:
            for k, label in enumerate(labels):
                heatmaps.append(results[name].heatmap[i, k])
                titles.append(f"{names[label]} ({probabilities[i, label]:.0%})\n{name}")
        figure = viz.panel(
            scenes.images[i],
            heatmaps,
            titles,
            input_title=f"input: {' + '.join(CLASS_NAMES[c] for c in labels)}",
        )
        path = out / f"scene_{i}.png"
        partial = out / f".scene_{i}.partial.png"
        figure.savefig(partial, dpi=100)
        os.replace(partial, path)  # a panel is either complete or absent
        paths.append(path)
    return paths
