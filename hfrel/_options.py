"""The one place that checks the options every entry point shares: methods and the start layer.

`explain`, `explain_images`, `evaluate`, `ExplainCallback` and the CLI all call these, so a bad
value gets the same message everywhere; `option` is how the caller spells the option (a keyword
name, or a CLI flag such as "--start-layer"). Labels are checked in `hfrel._labels`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hfrel._errors import MethodError
from hfrel._methods import METHODS

DEFAULT_METHOD = "transformer_attribution"


def method_names(method: object, *, option: str = "method") -> tuple[str, ...]:
    """`method` (a name or a sequence of names) as a tuple of known names, duplicates dropped, in order."""
    names = [method] if isinstance(method, str) else method
    if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
        raise MethodError(
            f"{option} must be a method name or a list of them; got {method!r}. hfrel's methods are: "
            f"{', '.join(METHODS)}."
        )
    if not names:
        raise MethodError(f"no method given ({option}); choose from {', '.join(METHODS)}.")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise MethodError(f"unknown method {unknown[0]!r}; hfrel's methods are: {', '.join(METHODS)}.")
    return tuple(dict.fromkeys(names))


def check_start_layer(start_layer: object, num_layers: int, *, option: str = "start_layer") -> int:
    """`start_layer` itself, if it names one of the model's `num_layers` blocks."""
    if isinstance(start_layer, bool) or not isinstance(start_layer, int) or not 0 <= start_layer < num_layers:
        raise MethodError(
            f"{option} must be an int in [0, {num_layers - 1}] (this model has {num_layers} blocks); "
            f"got {start_layer!r}."
        )
    return start_layer
