"""How far half-precision maps are from float32 maps, per method: Pearson correlation of each map.

    python benchmarks/precision.py [--scenes 64]

The trained demo model explains held-out two-object scenes (both objects' classes) in float32,
bfloat16, float16 and float32 under bfloat16 autocast; prints mean / median / minimum correlation of
each half-precision map with its float32 map. Relevance arithmetic is float32 in every case.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

import hfrel
from hfrel.datasets import load_demo_model, make_scenes
from hfrel.datasets._demo_model import MEASUREMENT_SEED
from hfrel.evaluation import map_correlation


def explain(precision: str, pixels: torch.Tensor, labels: torch.Tensor) -> dict[str, hfrel.Explanation]:
    model, _ = load_demo_model(device="cpu")
    if precision in ("bfloat16", "float16"):
        model = model.to(getattr(torch, precision))
    autocast = precision == "autocast-bfloat16"
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with hfrel.attach(model) as explainer, context:
        return explainer.explain(pixels, labels, method=hfrel.methods())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=64)
    args = parser.parse_args()
    scenes = make_scenes(args.scenes, objects=2, seed=MEASUREMENT_SEED)
    pixels = (scenes.images - 0.5) / 0.5  # the demo processor's normalisation
    reference = explain("float32", pixels, scenes.labels)
    print(f"{args.scenes} scenes x 2 classes = {2 * args.scenes} maps per method; correlation with float32")
    print("| method | " + " | ".join(["bfloat16", "float16", "autocast bf16"]) + " |")
    print("| --- | ---: | ---: | ---: |")
    rows: dict[str, list[str]] = {m: [] for m in hfrel.methods()}
    for precision in ("bfloat16", "float16", "autocast-bfloat16"):
        results = explain(precision, pixels, scenes.labels)
        for method in hfrel.methods():
            r = map_correlation(results[method].relevance, reference[method].relevance)
            finite = bool(torch.isfinite(results[method].relevance).all())
            rows[method].append(f"{r.mean():.4f} / {r.median():.4f} / {r.min():.3f}" + ("" if finite else " NaN!"))
    for method, cells in rows.items():
        print(f"| {method} | " + " | ".join(cells) + " |")
    print("(mean / median / minimum)")


if __name__ == "__main__":
    main()
