"""The `hfrel` command line: one module per subcommand, each with `register(subcommands)`.

Exit codes: 0 on success; 2 for bad input (a file, model, label or option that cannot be used),
with one line on stderr and no traceback; 1 for any other failure (also when another process of a
launched run failed that way).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import hfrel
from hfrel._errors import HfrelError
from hfrel.cli import _methods, app, demo, evaluate, explain

# Each subcommand module, in the order `hfrel --help` lists them.
SUBCOMMANDS = (demo, explain, evaluate, app, _methods)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line (argparse's own code for them)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hfrel", description="Relevance maps for Hugging Face vision transformers.")
    parser.add_argument("--version", action="version", version=f"hfrel {hfrel.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except HfrelError as error:
        print(f"hfrel: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("hfrel: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("HFREL_DEBUG"):
            raise
        print(f"hfrel: failed: {type(error).__name__}: {error} (set HFREL_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
