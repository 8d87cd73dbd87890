"""How long `hfrel app` takes to answer on the bundled demo model: the figure quoted in docs/app.md.

    python benchmarks/app_latency.py [--calls 10] [--threads 1]

Serves the app in this process on a free localhost port (the page `hfrel app` serves, model loaded
and attached once), then times, per call: the whole /explain request through gradio_client
(upload, queue, explanation, drawing, the overlays' URLs sent back), and the same explanation as a
direct `Explorer.explain` call that also draws the paper's panel, as the page does. Two requests:
the default (the predicted class, the paper's method), and two classes with two methods. Prints
the median and the slowest call of each; the first call of each kind is a warm-up and not counted.
On a shared machine, read the numbers as rough.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _times(call, count: int) -> list[float]:
    call()  # warm-up
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from gradio_client import Client, handle_file

    from hfrel._app import Explorer, build_app, example_scenes, theme
    from hfrel.datasets import load_demo_model
    from tests.browser import free_port

    model, processor = load_demo_model()
    explorer = Explorer(model, processor, model_text="the bundled demo model")
    with tempfile.TemporaryDirectory() as scratch:
        scene = example_scenes(Path(scratch), count=1)[0]
        app = build_app(explorer, [scene])
        port = free_port()
        app.queue(default_concurrency_limit=1).launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            ssr_mode=False,
            theme=theme(),
        )
        try:
            # download_files=False: the overlays stay on the server and come back as URLs, as a browser gets them
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            requests = {
                "predicted class, transformer_attribution": ("", ["transformer_attribution"]),
                "2 classes x (transformer_attribution, rollout)": (
                    "disk, cross",
                    ["transformer_attribution", "rollout"],
                ),
            }
            print(f"hfrel app on the demo model ({explorer.num_layers} blocks, 64x64), torch threads {args.threads}")
            print(f"{'request':48} {'through /explain':>22} {'explain + panel':>22}")
            for name, (classes, methods) in requests.items():
                served = _times(
                    lambda c=classes, m=methods: client.predict(handle_file(str(scene)), c, m, api_name="/explain"),
                    args.calls,
                )
                direct = _times(lambda c=classes, m=methods: explorer.explain(scene, c, m), args.calls)
                print(
                    f"{name:48} {_text(served):>22} {_text(direct):>22}",
                )
        finally:
            app.close()
            explorer.close()


def _text(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s (max {max(times):.3f})"


if __name__ == "__main__":
    main()
