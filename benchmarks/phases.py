"""Where an explanation's time goes: the phases of one `explain` call and the busiest operators.

    python benchmarks/phases.py                        # DeiT-small shape, batch 8, transformer_attribution
    python benchmarks/phases.py --method lrp --batch 1

hfrel marks its phases with `torch.profiler.record_function` ("hfrel.forward", "hfrel.gradients",
"hfrel.relevance", "hfrel.maps"), so any profiler trace of a user's own run shows them too. This
script profiles a few calls after a warm-up one and prints each phase's share of the call, then the
operators that take most time inside the relevance pass. Times are a profile, not a benchmark: for
ratios to the model's own passes use benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).parent))
from run import SHAPES, build, inputs

import hfrel

PHASES = ("hfrel.forward", "hfrel.gradients", "hfrel.relevance", "hfrel.maps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="deit-small", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--method", default="transformer_attribution", choices=hfrel.methods())
    parser.add_argument("--calls", type=int, default=3, help="profiled calls after one warm-up call")
    parser.add_argument("--top", type=int, default=12, help="operators listed for the relevance pass")
    args = parser.parse_args()

    device = torch.device("cpu")
    model = build(args.shape, device)
    pixels = inputs(args.batch, device)
    with hfrel.attach(model) as explainer:
        explainer.explain(pixels, method=args.method)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.calls):
                with record_function("hfrel.call"):
                    explainer.explain(pixels, method=args.method)

    events = {e.key: e for e in prof.key_averages()}
    call = events["hfrel.call"].cpu_time_total
    print(f"{args.shape}, batch {args.batch}, {args.method}, {torch.get_num_threads()} threads")
    print(f"one call: {call / args.calls / 1e6:.3f} s")
    for name in PHASES:
        if name in events:
            share = events[name].cpu_time_total / call
            print(f"  {name:16s} {events[name].cpu_time_total / args.calls / 1e6:7.3f} s  {share:6.1%}")

    # operators whose parent chain includes the relevance pass: profile again, that phase alone
    with hfrel.attach(model) as explainer, profile(activities=[ProfilerActivity.CPU]) as inner:
        explainer.explain(pixels, method=args.method)
    relevance_events = [e for e in inner.events() if e.name == "hfrel.relevance"]
    if not relevance_events:
        return
    window = relevance_events[0]
    start, end = window.time_range.start, window.time_range.end
    totals: dict[str, float] = {}
    for event in inner.events():
        inside = start <= event.time_range.start and event.time_range.end <= end
        if inside and event.name.startswith("aten::"):
            totals[event.name] = totals.get(event.name, 0.0) + event.self_cpu_time_total
    whole = window.cpu_time_total
    print(f"relevance pass, busiest operators (self time, share of the pass of {whole / 1e6:.3f} s):")
    for name, spent in sorted(totals.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {name:28s} {spent / 1e6:7.3f} s  {spent / whole:6.1%}")


if __name__ == "__main__":
    main()
