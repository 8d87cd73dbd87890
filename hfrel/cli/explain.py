"""`hfrel explain`: relevance maps for images on disk, with any local or hub checkpoint.

    hfrel explain photos/ --model facebook/deit-small-patch16-224 --label "tabby cat" --label 281
    hfrel explain photos/ --model openai/clip-vit-base-patch32 --text "a photo of a cat" --text "a photo of a dog"

Per image it prints the top-k classes and writes, into --out/<image name>/, an overlay per
(class, method), the paper's panel (input + one column per class and method), the raw maps
(maps.npz) and record.json; --out/summary.json records every image and every input that was
skipped, --out/index.json how the run was done. This module parses the options; the pipeline that
checks and runs them is `hfrel.pipeline`, the same code path as `hfrel.explain_images`. Launched as
several processes (`accelerate launch`, `torchrun`), each explains its share; a rerun reuses finished images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hfrel._errors import HfrelError
from hfrel.pipeline import CLI_NAMES, Checkpoint, Request
from hfrel.pipeline import run as run_pipeline
from hfrel.pipeline.processes import launched_rank


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain",
        help="explain images from disk with a local or hub checkpoint",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Images already explained in --out with the same model, settings and input are reused. "
        "Started by a launcher (accelerate launch --multi_gpu --num_processes N --no_python hfrel explain ..., "
        "or torchrun --nproc_per_node N --no-python hfrel explain ...), the processes share the images. "
        "Exit codes: 0 when at least one image was explained; 2 for bad input (no readable image, "
        "missing model, unknown label, bad option); 1 for any other failure.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or folders of images")
    parser.add_argument("--model", required=True, metavar="ID_OR_DIR", help="hub id or local checkpoint folder")
    parser.add_argument(
        "--label",
        action="append",
        metavar="L",
        help="class to explain: an index or a class name (case-insensitive); repeat for one map per class. "
        "Default: each image's predicted class",
    )
    parser.add_argument(
        "--text",
        action="append",
        metavar="PROMPT",
        help="a prompt, for image–text models (CLIP, SigLIP, MetaCLIP 2); repeat for several. Every prompt "
        "is explained: prompts ranked with their probability, an overlay per (prompt, method), token relevance",
    )
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes printed per image (default 5)")
    parser.add_argument(
        "--method",
        action="append",
        metavar="M",
        help="method to run (see `hfrel methods`); repeat for several. Default: transformer_attribution",
    )
    parser.add_argument("--start-layer", type=int, default=0, metavar="S", help="first block combined (default 0)")
    parser.add_argument(
        "--out", type=Path, default=Path("hfrel-out"), metavar="DIR", help="output folder (default hfrel-out)"
    )
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per forward pass (default 8)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--cmap", default="jet", metavar="NAME", help="matplotlib colormap (default jet)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the heatmap over the image (0..1)")
    parser.add_argument(
        "--original-size",
        action="store_true",
        help="also draw each map on the photo at its original size (the processor's crop mapped back) "
        "and store those maps in maps.npz",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bars on stderr: auto shows them on a terminal only",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except HfrelError as error:
        if launched_rank() != 0:  # every process meets the same error; the main one says so once
            raise SystemExit(error.exit_code) from None
        raise


def _run(args: argparse.Namespace) -> int:
    request = Request(
        images=[str(path) for path in args.inputs],
        out=args.out,
        label=args.label,
        method=args.method or "transformer_attribution",
        start_layer=args.start_layer,
        batch_size=args.batch_size,
        top_k=args.top_k,
        cmap=args.cmap,
        alpha=args.alpha,
        original_size=args.original_size,
        progress=args.progress,
        verbose=True,
        model_name=str(args.model),
        text=args.text,
    )
    run_pipeline(request, Checkpoint(str(args.model), args.device, args.progress), names=CLI_NAMES)
    return 0
