"""The exceptions hfrel raises: one base class, so callers can catch everything hfrel refuses."""

from __future__ import annotations


class HfrelError(ValueError):
    """Base class of every error hfrel raises on purpose; the message says what to change."""


class UnsupportedModelError(HfrelError):
    """The model is not one hfrel can explain (architecture, head or module layout)."""


class InputError(HfrelError):
    """`pixel_values` (or another model input) cannot be explained as given."""


class LabelError(HfrelError):
    """The target classes do not fit the batch or the model's classes."""


class MethodError(HfrelError):
    """An unknown method name, or an option (such as `start_layer`) out of range."""


class AttachError(HfrelError):
    """The explainer lifecycle was misused: double attach, or use after detach."""
