"""`hfrel app`: explore explanations in the browser (needs the extra: pip install 'hfrel[app]').

    hfrel app                          # the bundled demo model, offline, with its scenes as examples
    hfrel app --model facebook/deit-small-patch16-224 --device cuda

Serves a page on http://127.0.0.1:7860 (this machine only): upload an image, choose classes and
methods, and see the paper's panel, each map over the image and the top classes; the raw maps
download as .npz. The same explanation is one API call, /explain (docs/app.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
from pathlib import Path
from typing import Any

from hfrel._errors import InputError
from hfrel._loading import load_classifier, resolve_device


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "app",
        help="explore explanations in the browser (needs pip install 'hfrel[app]')",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", metavar="ID_OR_DIR", help="hub id or local checkpoint folder (default: the bundled demo model)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves every network it is on)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--max-file-size",
        default="10mb",
        metavar="SIZE",
        help="largest upload accepted, e.g. 10mb (default) or 500kb",
    )
    parser.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default: anyone could use it)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hfrel._app import Explorer, _gradio, build_app, example_scenes, serve

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be in 1..65535; got {args.port}")
    if not _size_ok(args.max_file_size):
        raise InputError(f"--max-file-size must be a size such as 10mb, 500kb or 2gb; got {args.max_file_size!r}")
    _gradio()  # a missing extra is said before the model loads
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="hfrel-app-examples-") as scratch:
        if args.model is None:
            from hfrel.datasets import demo_model_path

            model, processor = load_classifier(demo_model_path(), device=device)
            text, examples = "the bundled demo model", example_scenes(Path(scratch))
        else:
            model, processor = load_classifier(args.model, device=device)
            text, examples = str(args.model), []
        if not _loopback(args.host):
            print(
                f"hfrel app: serving on {args.host}: anyone who can reach this machine can use the app", file=sys.stderr
            )
        explorer = Explorer(model, processor, model_text=text)
        previous = _stop_on_sigterm()
        try:
            serve(
                build_app(explorer, examples),
                host=args.host,
                port=args.port,
                share=args.share,
                max_file_size=args.max_file_size,
            )
        finally:
            explorer.close()
            if previous is not None:
                import signal

                signal.signal(signal.SIGTERM, previous)
    return 0


def _size_ok(text: str) -> bool:
    import re

    return re.fullmatch(r"\s*\d+(\.\d+)?\s*(b|kb|mb|gb|tb)?\s*", str(text).lower()) is not None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stop_on_sigterm() -> Any:
    """SIGTERM (a service manager, a test stopping the server) shuts down like Ctrl-C: the model is
    detached and the temporary files are deleted on the way out. Returns the handler it replaced."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)
