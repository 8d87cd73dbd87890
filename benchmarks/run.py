"""Speed and memory of every method, as ratios to the model's own forward and forward+backward.

    python benchmarks/run.py                 # DeiT-small and ViT-Base shapes, batches 1, 8, 32 (long on CPU)
    python benchmarks/run.py --quick         # DeiT-small shape, batch 8: the numbers the targets are about
    python benchmarks/run.py --shapes swin-tiny --batches 8   # Swin-T shape (windows, merges)

Everything is measured side by side in one process, interleaved round by round, and the median of
the rounds is reported, so a busy machine slows every column alike. Baselines are the model as the
user has it: default (sdpa) attention, parameters requiring grad; "forward" runs under no_grad,
"forward+backward" backpropagates the top logit into the parameters. Peak memory is measured in a
fresh subprocess per cell (peak resident set on CPU, peak allocated on CUDA), as the increase over
the memory held before the call. The script prints ratios; it never asserts anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

import hfrel

SHAPES = {
    "deit-small": (DeiTForImageClassification, DeiTConfig, dict(hidden_size=384, num_attention_heads=6)),
    "vit-base": (ViTForImageClassification, ViTConfig, dict(hidden_size=768, num_attention_heads=12)),
    # Swin-T: 224 px, 4 px patches, 7x7 windows, stages of 2-2-6-2 blocks, 96 channels doubling per stage
    "swin-tiny": (
        SwinForImageClassification,
        SwinConfig,
        dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, patch_size=4),
    ),
}
BASELINES = ("forward", "forward+backward")
MULTI_CLASS = 4  # classes per image for the "several classes in one call" measurement


def build(shape: str, device: torch.device) -> torch.nn.Module:
    """Random weights in the shape of the named model: 224 px, 16 px patches, 12 blocks, 1000 classes
    (Swin-T: its own stages, windows and patches)."""
    model_class, config_class, size = SHAPES[shape]
    torch.manual_seed(0)
    if config_class is SwinConfig:
        return model_class(config_class(**size, image_size=224, num_labels=1000)).to(device).eval()
    config = config_class(
        **size,
        num_hidden_layers=12,
        intermediate_size=4 * size["hidden_size"],
        image_size=224,
        patch_size=16,
        num_labels=1000,
    )
    return model_class(config).to(device).eval()


def inputs(batch: int, device: torch.device) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)


def forward(model: torch.nn.Module, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        model(pixel_values=pixels)


def forward_backward(model: torch.nn.Module, pixels: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    logits = model(pixel_values=pixels).logits
    logits.max(dim=-1).values.sum().backward()
    model.zero_grad(set_to_none=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def operations(model: torch.nn.Module, explainer_of: Callable, pixels: torch.Tensor, methods: list[str]) -> dict:
    """name -> a zero-argument call; method calls run on an attached model, baselines on the plain one."""
    ops: dict[str, Callable[[], object]] = {
        "forward": lambda: forward(model, pixels),
        "forward+backward": lambda: forward_backward(model, pixels),
    }
    for method in methods:
        ops[method] = lambda method=method: explainer_of().explain(pixels, method=method)
    return ops


def measure_times(
    shape: str, batch: int, methods: list[str], repeats: int, device: torch.device, multi_cells: bool = True
) -> dict:
    model = build(shape, device)
    pixels = inputs(batch, device)
    labels = torch.arange(batch * MULTI_CLASS).reshape(batch, MULTI_CLASS) % 1000
    state: dict[str, hfrel.Explainer | None] = {"explainer": None}

    def explainer() -> hfrel.Explainer:
        if state["explainer"] is None:
            state["explainer"] = hfrel.attach(model)
        return state["explainer"]

    def plain() -> None:
        if state["explainer"] is not None:
            state["explainer"].detach()
            state["explainer"] = None

    ops = operations(model, explainer, pixels, methods)
    multi = {
        f"{MULTI_CLASS} classes, one call": lambda: explainer().explain(pixels, labels),
        f"{MULTI_CLASS} classes, {MULTI_CLASS} calls": lambda: [
            explainer().explain(pixels, labels[:, k]) for k in range(MULTI_CLASS)
        ],
        "all methods, one call": lambda: explainer().explain(pixels, method=methods),
    }
    samples: dict[str, list[float]] = {}
    for round_index in range(repeats + 1):  # round 0 warms up and is not counted
        for name, op in {**ops, **(multi if batch == 8 and multi_cells else {})}.items():
            if name in BASELINES:
                plain()
            seconds = timed(op, device)
            if round_index:
                samples.setdefault(name, []).append(seconds)
    plain()
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_memory(shape: str, batch: int, op: str, device: torch.device) -> float:
    """Peak memory (bytes) one call adds over what is held before it, in a fresh process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    command = [sys.executable, __file__, "--memory-cell", shape, str(batch), op, str(device)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_cell(shape: str, batch: int, op: str, device_name: str) -> None:
    """Child process: run one operation once and print the peak memory it added, in bytes."""
    device = torch.device(device_name)
    model = build(shape, device)
    pixels = inputs(batch, device)
    explainer = hfrel.attach(model) if op not in BASELINES else None
    call = operations(model, lambda: explainer, pixels, [op] if explainer else [])[op]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        print(torch.cuda.max_memory_allocated(device) - before)
        return
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set to the current one
    before = _rss_kib("VmRSS")
    call()
    print((_rss_kib("VmHWM") - before) * 1024)


def table(results: dict, device: torch.device) -> str:
    lines = []
    for shape, by_batch in results["cells"].items():
        lines.append(f"\n### {shape} ({device.type})\n")
        header = "| method | batch | s / image | images / s | x forward | x fwd+bwd | peak memory x fwd+bwd |"
        lines += [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for batch, cell in by_batch.items():
            times, memory = cell["seconds"], cell.get("memory_bytes", {})
            for name in [*BASELINES, *results["methods"]]:
                seconds = times[name]
                mem = memory.get(name)
                mem_text = f"{mem / memory['forward+backward']:.2f}" if mem and memory.get("forward+backward") else ""
                lines.append(
                    f"| {name} | {batch} | {seconds / int(batch):.4f} | {int(batch) / seconds:.1f} | "
                    f"{seconds / times['forward']:.2f} | {seconds / times['forward+backward']:.2f} | {mem_text} |"
                )
            extra = [k for k in times if k not in BASELINES and k not in results["methods"]]
            for name in extra:
                lines.append(
                    f"| {name} | {batch} | {times[name] / int(batch):.4f} | {int(batch) / times[name]:.1f} | "
                    f"{times[name] / times['forward']:.2f} | {times[name] / times['forward+backward']:.2f} | |"
                )
            several, one = times.get(f"{MULTI_CLASS} classes, one call"), times.get("transformer_attribution")
            if several and one:  # the classes are explained with the default method
                ratio = several / one
                lines.append(f"\n{MULTI_CLASS} classes in one call cost {ratio:.2f}x one class (batch {batch}).")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-cell":
        shape, batch, op, device = sys.argv[2:6]
        memory_cell(shape, int(batch), op, device)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DeiT-small shape, batch 8 only")
    parser.add_argument("--shapes", default="deit-small,vit-base")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--method", action="append", help="method to time; repeat for several (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="counted rounds per cell (median reported)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-multi", action="store_true", help="skip the several-classes / all-methods cells")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.batches = "deit-small", "8"
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    if args.device == "auto" and device.type != "cuda":
        device = torch.device("cpu")
    methods = args.method or hfrel.methods()
    results: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "hfrel": hfrel.__version__,
        "methods": methods,
        "repeats": args.repeats,
        "cells": {},
    }
    for shape in args.shapes.split(","):
        for batch in map(int, args.batches.split(",")):
            repeats = args.repeats if batch <= 8 else max(2, args.repeats // 2)
            started = time.perf_counter()
            cell = {"seconds": measure_times(shape, batch, methods, repeats, device, not args.no_multi)}
            if not args.no_memory:
                cell["memory_bytes"] = {op: measure_memory(shape, batch, op, device) for op in [*BASELINES, *methods]}
            results["cells"].setdefault(shape, {})[str(batch)] = cell
            print(f"{shape} batch {batch}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{'quick' if args.quick else 'full'}-{device.type}"
    if args.shapes == "swin-tiny":
        stem = f"swin-{device.type}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = table(results, device)
    (args.out / f"{stem}.md").write_text(markdown.lstrip() + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
