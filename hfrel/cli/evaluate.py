"""`hfrel evaluate`: score explanation methods on images with object masks, the paper's way.

Writes DIR/report.json, DIR/report.md, DIR/report.html and DIR/perturbation.png (DIR from --out); prints
the table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from hfrel._errors import InputError
from hfrel._loading import load_classifier
from hfrel._methods import METHODS
from hfrel._options import method_names
from hfrel.models._image_text import find_image_text_spec


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="measure methods: segmentation, localisation and perturbation tests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True, metavar="ID_OR_DIR", help="hub id or folder saved with save_pretrained"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR_OR_FILE",
        help="folder with images/, masks/ (non-zero = object) and labels.csv (header image,label); "
        "the ImageNet-segmentation file gtsegs_ijcv.mat (needs h5py, and --target predicted); or "
        "'shapes' / 'shapes-pairs': built-in synthetic scenes with one / two objects (--n items, default 200)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for report.json, report.md, report.html and perturbation.png",
    )
    parser.add_argument(
        "--method",
        action="append",
        metavar="M",
        help=f"method to score; repeat for several (default: all): {', '.join(METHODS)}",
    )
    parser.add_argument("--n", type=int, metavar="N", help="evaluate at most N items (default: all)")
    parser.add_argument(
        "--start-layer", type=int, default=0, metavar="S", help="first block combined (default 0; paper's scripts: 1)"
    )
    parser.add_argument(
        "--target",
        choices=("label", "predicted"),
        default="label",
        help="class the maps explain: the dataset label (default) or the model's prediction",
    )
    parser.add_argument(
        "--threshold", choices=("mean", "otsu"), default="mean", help="foreground cut of the segmentation test"
    )
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per batch (default 8)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hfrel.evaluation import evaluate, markdown_table, open_dataset, write_report

    methods = None if args.method is None else method_names(args.method, option="--method")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out must be a folder; {out} is a file.")
    data = open_dataset(args.data, count=args.n)  # checked before the (slow) model load
    with contextlib.closing(data) if hasattr(data, "close") else contextlib.nullcontext():
        model, processor = load_classifier(args.model, device=args.device)
        if find_image_text_spec(model) is not None:
            raise InputError(
                f"hfrel evaluate measures classifiers on labelled images; {args.model} is an image–text model "
                f"({type(model).__name__}). Explain it with hfrel explain --text ..."
            )
        report = evaluate(
            model,
            processor,
            data,
            method=methods,
            target=args.target,
            start_layer=args.start_layer,
            threshold=args.threshold,
            n=args.n,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
    report["model"] = args.model
    for item in report["skipped"]:
        print(f"hfrel: skipped {item['item']}: {item['reason']}", file=sys.stderr)
    written = write_report(report, out)
    print(markdown_table(report), end="")
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
