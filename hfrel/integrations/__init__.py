"""hfrel inside Hugging Face workflows: a Trainer callback that watches explanations while a model trains."""

from hfrel.integrations._trainer import ExplainCallback

__all__ = ["ExplainCallback"]
