"""The `hfrel` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import hfrel


def _methods(args: argparse.Namespace) -> int:
    descriptions = hfrel.describe_methods()
    width = max(map(len, descriptions))
    for name, text in descriptions.items():
        print(f"{name:<{width}}  {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfrel", description="Relevance maps for Hugging Face vision transformers.")
    parser.add_argument("--version", action="version", version=f"hfrel {hfrel.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("methods", help="list the explanation methods")
    listing.set_defaults(run=_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
