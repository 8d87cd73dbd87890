"""`hfrel methods`: list the explanation methods, one line each."""

from __future__ import annotations

import argparse

import hfrel


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("methods", help="list the explanation methods", description=__doc__)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    descriptions = hfrel.describe_methods()
    width = max(map(len, descriptions))
    for name, text in descriptions.items():
        print(f"{name:<{width}}  {text}")
    return 0
