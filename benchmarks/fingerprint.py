"""What the weights digest costs per run, and what hashing through a buffer view saves.

    python benchmarks/fingerprint.py [--shape vit-base] [--repeats 3]

A rerun reuses an image's files only if the weights digest is unchanged, so `hfrel explain` and
`explain_images` hash every parameter and buffer once per run. hfrel hashes each CPU tensor's
memory in place (a memoryview); the earlier code copied every tensor's bytes first (`tobytes()`).
Caching the digest per model was measured against too and rejected: edits through `param.data`
leave `tensor._version` unchanged, so a cache keyed on it would reuse stale results. Prints the
time of one digest and the ratio of the copying variant to hfrel's, and the time for the same model
offloaded by accelerate (its weights read back module by module), measured in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import SHAPES, build

from hfrel.pipeline.fingerprint import weights_digest


def copying_digest(model: torch.nn.Module) -> str:
    """The earlier way: every tensor's bytes copied out, then hashed."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        hasher.update(name.encode())
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="vit-base", choices=sorted(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = build(args.shape, torch.device("cpu"))
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    view = best_of(args.repeats, lambda: weights_digest(model))
    copy = best_of(args.repeats, lambda: copying_digest(model))
    print(f"{args.shape}: {size / 2**20:.0f} MiB of weights")
    print(f"weights_digest (buffer view): {view:.2f} s; copying bytes first: {copy:.2f} s; ratio {copy / view:.2f}")

    from accelerate import cpu_offload

    cpu_offload(model, execution_device=torch.device("cpu"))  # every weight a meta tensor between calls
    offloaded = best_of(args.repeats, lambda: weights_digest(model))
    print(f"the same model offloaded by accelerate: {offloaded:.2f} s; ratio to the plain model {offloaded / view:.2f}")


if __name__ == "__main__":
    main()
