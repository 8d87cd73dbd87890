"""Threads: what serialising the calls of one explainer costs, measured against what threads could gain.

    python benchmarks/threads.py            # DeiT-small shape, batch 2, 4 calls per thread, 2 threads

An explainer serialises its calls (a lock: one tape, one eval-mode switch, one model). Per-call tapes
would let one explainer's calls overlap, so they could only gain what two *independent* explainers on
two models gain by running in two threads instead of one after the other; this script measures that
ratio, and the ratio of one explainer called from threads to the same calls made sequentially.
Ratios in one run, on this machine; torch's own intra-op threads are set by --torch-threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import SHAPES, build, inputs

import hfrel


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="deit-small", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--calls", type=int, default=4, help="calls per thread")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cpu")
    models = [build(args.shape, device) for _ in range(args.threads)]
    pixels = inputs(args.batch, device)
    explainers = [hfrel.attach(model) for model in models]
    for explainer in explainers:
        explainer.explain(pixels)  # warm-up

    def calls(explainer: hfrel.Explainer) -> None:
        for _ in range(args.calls):
            explainer.explain(pixels)

    def in_threads(work: list) -> None:
        with ThreadPoolExecutor(len(work)) as pool:
            list(pool.map(lambda job: job(), work))

    one = explainers[0]
    sequential_one = _timed(lambda: [calls(one) for _ in range(args.threads)])
    threaded_one = _timed(lambda: in_threads([lambda: calls(one)] * args.threads))
    sequential_many = _timed(lambda: [calls(e) for e in explainers])
    threaded_many = _timed(lambda: in_threads([lambda e=e: calls(e) for e in explainers]))
    for explainer in explainers:
        explainer.detach()
    total = args.threads * args.calls
    print(f"{args.shape}, batch {args.batch}, {total} calls, {args.threads} threads, torch {args.torch_threads}")
    print(f"one explainer, threads / sequential: {threaded_one / sequential_one:.2f}")
    many = f"{args.threads} explainers on {args.threads} models"
    print(f"{many}, threads / sequential: {threaded_many / sequential_many:.2f}")
    print(f"(sequential: {sequential_one / total * 1e3:.0f} ms per call)")


if __name__ == "__main__":
    main()
