"""One checkout's cost ratios, for comparing hfrel versions: run it once per checkout, alternating.

    PYTHONPATH=OLD python benchmarks/versions.py OLD    # e.g. a `git worktree add OLD <commit>`
    PYTHONPATH=NEW python benchmarks/versions.py NEW

Each run builds the named shape with random weights (as benchmarks/run.py does, from that checkout's
own benchmarks/run.py) and times, interleaved over rounds, the model's forward+backward, one
`transformer_attribution` call, one `lrp` call and one call explaining 4 classes of every image. It
prints the medians' ratios. Ratios, not seconds, are comparable across runs on a shared machine, and
even they move by about 0.15 between runs there: alternate the checkouts and run each several times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="the hfrel checkout on PYTHONPATH (its benchmarks/run.py is used)")
    parser.add_argument("--shape", default="deit-small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds after one warm-up round")
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout / "benchmarks"))
    from run import build, forward_backward, inputs

    import hfrel

    if not Path(hfrel.__file__).resolve().is_relative_to(args.checkout.resolve()):
        raise SystemExit(f"hfrel is imported from {hfrel.__file__}, not {args.checkout}: set PYTHONPATH to it.")
    device = torch.device("cpu")
    model = build(args.shape, device)
    pixels = inputs(args.batch, device)
    four = torch.arange(args.batch * 4).reshape(args.batch, 4) % 1000

    def explain(**kwargs: object) -> None:
        with hfrel.attach(model) as explainer:
            explainer.explain(pixels, **kwargs)

    calls = {
        "fwd+bwd": lambda: forward_backward(model, pixels),
        "transformer_attribution": lambda: explain(method="transformer_attribution"),
        "lrp": lambda: explain(method="lrp"),
        "4 classes": lambda: explain(label=four),
    }
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(args.rounds + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_index:
                seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        f"{args.checkout} {args.shape} batch {args.batch}: fwd+bwd {median['fwd+bwd']:.2f} s; "
        f"transformer_attribution {median['transformer_attribution'] / median['fwd+bwd']:.2f}x fwd+bwd; "
        f"lrp {median['lrp'] / median['fwd+bwd']:.2f}x fwd+bwd; "
        f"4 classes in one call {median['4 classes'] / median['transformer_attribution']:.2f}x one class"
    )


if __name__ == "__main__":
    main()
