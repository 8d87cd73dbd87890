"""Wall time of `hfrel explain` on one process and on two launched processes, same inputs, CPU.

    python benchmarks/explain_processes.py [--images 32] [--keep DIR]

Builds a DeiT-tiny-sized ViT (192 wide, 12 blocks, 224 px, random weights) saved with its image
processor and a folder of photo-like images, then times, each into a fresh output folder:
one process on 1 thread; one process on 2 threads; `accelerate launch --multi_gpu --num_processes 2`
(2 CPU processes of 1 thread over gloo); and `accelerate launch --cpu --num_processes 2`, which
starts one process unless MPI is set up (index.json says how many ran). Then a rerun of the
2-process command, which reuses every image. Times include starting Python and loading the model.
On a shared machine, read them as rough.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ["accelerate", "launch", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _prepare(root: Path, count: int) -> None:
    import transformers as tf

    tf.utils.logging.disable_progress_bar()
    config = tf.ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768)
    tf.ViTForImageClassification(config).save_pretrained(root / "checkpoint")
    tf.ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(root / "checkpoint")
    (root / "photos").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((320, 240), Image.BILINEAR).save(root / "photos" / f"photo{i:03d}.jpg")


def _time(command: list[str], root: Path, threads: int, out: str) -> tuple[float, str, dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr}")
    index = json.loads((root / out / "index.json").read_text())
    return seconds, done.stdout.strip().splitlines()[-1], index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="hfrel-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    _prepare(root, args.images)
    explain = ["explain", "photos", "--model", "checkpoint", "--device", "cpu", "--batch-size", "8"]
    explain += ["--progress", "never"]
    port = ["--main_process_port", "29533"]
    runs = [
        ("1 process, 1 thread", ["hfrel", *explain, "--out", "one"], 1, "one"),
        ("1 process, 2 threads", ["hfrel", *explain, "--out", "one-2t"], 2, "one-2t"),
        (
            "accelerate launch --multi_gpu --num_processes 2 (1 thread each)",
            [*LAUNCH, "--multi_gpu", "--num_processes", "2", *port, "--no_python", "hfrel", *explain, "--out", "two"],
            1,
            "two",
        ),
        (
            "accelerate launch --cpu --num_processes 2",
            [*LAUNCH, "--cpu", "--num_processes", "2", "--no_python", "hfrel", *explain, "--out", "cpu-flag"],
            1,
            "cpu-flag",
        ),
        (
            "rerun of the 2-process command (all reused)",
            [*LAUNCH, "--multi_gpu", "--num_processes", "2", *port, "--no_python", "hfrel", *explain, "--out", "two"],
            1,
            "two",
        ),
    ]
    print(f"{args.images} images, 320x240 -> 224x224, ViT 192 wide x 12 blocks; CPUs: {os.cpu_count()}")
    for label, command, threads, out in runs:
        seconds, last, index = _time(command, root, threads, out)
        print(f"{label:<62} {seconds:6.1f} s  processes={index['processes']}  computed={index['computed']}")
        print(f"    {last}")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
