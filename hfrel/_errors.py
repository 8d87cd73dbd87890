"""The exceptions hfrel raises: one base class, so callers can catch everything hfrel refuses.

Each error also derives from the built-in exception that says what kind of problem it is:
a ValueError for a value the caller passed (a model, an input, a label, a method, an option),
a RuntimeError for a call made in a state that cannot work (a detached explainer, an inference-mode
context, a process of a launched run that failed).
"""

from __future__ import annotations


class HfrelError(Exception):
    """Base class of every error hfrel raises on purpose; the message says what to change."""

    exit_code = 2
    """The `hfrel` command's exit status for this error (2: bad input)."""


class UnsupportedModelError(HfrelError, ValueError):
    """The model is not one hfrel can explain (architecture, head or module layout), or one the part of hfrel
    asked does not handle yet (`evaluate` and NaFlex models)."""


class FamilySpecError(HfrelError, ValueError):
    """A `FamilySpec` whose fields contradict each other (a pooling it does not know, a missing part)."""


class InputError(HfrelError, ValueError):
    """`pixel_values` (or another model input, or an option) cannot be explained as given."""


class LabelError(HfrelError, ValueError):
    """The target classes do not fit the batch or the model's classes."""


class MethodError(HfrelError, ValueError):
    """An unknown method name, or an option (such as `start_layer`) out of range."""


class AttachError(HfrelError, RuntimeError):
    """The explainer lifecycle was misused: double attach, use after detach, or an undo that failed."""


class ContextError(HfrelError, RuntimeError):
    """`explain` was called where it cannot run, e.g. gradient methods inside `torch.inference_mode()`."""


class ProcessFailedError(HfrelError, RuntimeError):
    """A process of a launched run failed; every process of the run raises this same error."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple:
        return (_process_failed, (str(self), self.exit_code))


def _process_failed(message: str, exit_code: int) -> ProcessFailedError:
    return ProcessFailedError(message, exit_code=exit_code)
