"""Explainers under threads: every call gets its own correct result.

One explainer called from several threads gives each call what the same call gives alone (calls
take turns: the tape, the modules' modes and the model are shared); two explainers on two models
run side by side and agree with sequential runs.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

import hfrel
from tests import tiny

METHODS = ["transformer_attribution", "lrp", "rollout"]


def _batches(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 32, 32, generator=generator) for _ in range(count)]


def _same(a: dict[str, hfrel.Explanation], b: dict[str, hfrel.Explanation]) -> None:
    for name in METHODS:
        torch.testing.assert_close(a[name].relevance, b[name].relevance, rtol=1e-5, atol=1e-7)
        assert torch.equal(a[name].labels, b[name].labels)


def _together(calls: list, threads: int) -> list:
    """Run the calls, one per thread, all released at once."""
    start = threading.Barrier(threads)

    def run(call):
        start.wait()
        return call()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, calls))


def test_one_explainer_from_several_threads_gives_each_call_its_own_result():
    model = tiny.build("vit")
    batches = _batches(8)
    labels = [torch.tensor([i % 5, (i + 2) % 5]) for i in range(len(batches))]
    with hfrel.attach(model) as explainer:
        alone = [explainer.explain(x, y, method=METHODS) for x, y in zip(batches, labels, strict=True)]
        calls = [lambda x=x, y=y: explainer.explain(x, y, method=METHODS) for x, y in zip(batches, labels, strict=True)]
        for _ in range(3):
            threaded = _together(calls, len(calls))
            for a, b in zip(alone, threaded, strict=True):
                _same(a, b)


def test_two_explainers_on_two_models_run_in_parallel():
    """Each thread explains every batch with its own explainer (different models, different families)."""
    first, second = tiny.build("vit"), tiny.build("deit", seed=1)
    batches = _batches(4)
    with hfrel.attach(first) as one, hfrel.attach(second) as two:
        alone = [[e.explain(x, method=METHODS) for x in batches] for e in (one, two)]
        calls = [lambda e=e: [e.explain(x, method=METHODS) for x in batches] for e in (one, two)]
        for _ in range(3):
            threaded = _together(calls, len(calls))
            for expected, got in zip(alone, threaded, strict=True):
                for a, b in zip(expected, got, strict=True):
                    _same(a, b)
