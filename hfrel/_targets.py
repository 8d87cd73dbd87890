"""Targets: what one explanation explains, as one differentiable score per image (and per target).

A target gives the gradient pass its seed (the scores whose gradients w.r.t. A_l the methods read)
and the relevance walk its start: the exact head rule where the head is known (a class logit of a
linear head, a prompt's scaled cosine), or, for any user function of the outputs, the encoder's last
hidden states times the score's gradient (hfrel's extension, docs/methods.md "Any target").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from hfrel._errors import LabelError
from hfrel._labels import resolve_labels

TargetFn = Callable[[Any], torch.Tensor]
"""fn(outputs) -> (B,) or (B, K) differentiable scores, one (or K) per image."""


@dataclass
class Target:
    """The scores one explanation explains, and how the relevance walk starts from them."""

    scores: torch.Tensor
    """(B, T) scores, part of the autograd graph whenever gradients are needed."""
    labels: torch.Tensor
    """(B, T) what each score is: class or prompt indices; for a function target, the score's column."""
    many: bool
    """The caller asked for T targets per image (2-D labels, or a (B, K) function output)."""
    start: Literal["head", "hidden"]
    """"head": the family's exact head rule from a one-hot on `labels`; "hidden": hidden state x gradient."""

    @property
    def count(self) -> int:
        return int(self.scores.shape[1])


def class_target(label: object, logits: torch.Tensor, id2label: Mapping | None) -> Target:
    """A class (or prompt) logit per image: None -> each image's best, else as `resolve_labels` reads it."""
    labels, many = resolve_labels(label, logits.detach(), id2label)
    scores = logits.gather(-1, labels.to(logits.device))
    return Target(scores=scores, labels=labels, many=many, start="head")


def function_target(fn: TargetFn, outputs: Any, batch: int) -> Target:
    """The user's `fn(outputs)`: checked to be (B,) or (B, K) floating scores."""
    scores = fn(outputs)
    if not isinstance(scores, torch.Tensor):
        raise LabelError(
            f"target must return a torch.Tensor of shape (B,) or (B, K), one score per image; it returned "
            f"{type(scores).__name__}."
        )
    if scores.dim() not in (1, 2) or scores.shape[0] != batch or (scores.dim() == 2 and scores.shape[1] == 0):
        raise LabelError(
            f"target must return one score per image, shape ({batch},), or K per image, shape ({batch}, K); "
            f"it returned shape {tuple(scores.shape)}. Reduce over tokens or features inside the function."
        )
    if not scores.is_floating_point():
        raise LabelError(f"target must return floating-point scores, got dtype {scores.dtype}.")
    many = scores.dim() == 2
    scores = scores.reshape(batch, -1)
    labels = torch.arange(scores.shape[1], device=scores.device).expand(batch, -1)
    return Target(scores=scores, labels=labels, many=many, start="hidden")


def check_exclusive(label: object, target: object) -> None:
    """`label` picks among the model's own logits, `target` replaces them: one or the other."""
    if label is not None and target is not None:
        raise LabelError(
            "pass either label (classes or prompts of the model's own logits) or target (a function of the "
            "outputs returning the scores to explain), not both."
        )
    if target is not None and not callable(target):
        raise LabelError(
            f"target must be a function outputs -> (B,) or (B, K) scores, got {type(target).__name__}; "
            f"to pick classes use label=."
        )
