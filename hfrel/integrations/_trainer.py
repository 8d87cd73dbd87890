"""`ExplainCallback`: explain fixed images every N optimiser steps of a `transformers.Trainer` run.

Watching maps evolve while a model fine-tunes catches shortcut learning early. The callback must not
change training in any way: it explains the unwrapped model in eval semantics, restores every
random number generator it could touch, and leaves modes, hooks, attention and `.grad`s as found
(hfrel.attach guarantees the last three), so a run ends with the same weights with or without it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import hfrel
from hfrel._errors import InputError, MethodError
from hfrel._images import model_view
from hfrel._options import method_names


@contextmanager
def _untouched_random_state() -> Iterator[None]:
    """Restore Python's, NumPy's, torch's CPU and every CUDA generator's state afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, out of DDP / DataParallel / torch.compile wrappers that Trainer or accelerate add."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


class ExplainCallback(TrainerCallback):
    """Explains fixed images during training and writes a panel per explanation.

    Files go to `<args.output_dir>/hfrel/step-<N>.png` (and `eval-step-<N>.png`); when the run reports
    to TensorBoard, the same figure is logged under the tag `hfrel/<method>` at the global step, in a
    run named "hfrel" beside the Trainer's runs (`<output_dir>/runs/hfrel`).

    `pixel_values`: (B, C, H, W) images as the model takes them; `label`: what to explain (anything
    `Explainer.explain` accepts; None explains each image's predicted class at that step); `method`:
    the method whose maps are drawn;
    `every_n_steps`: explain after every N optimiser steps (gradient accumulation counts once per
    optimiser step); `on_evaluate`: also explain after each evaluation; `images`: the images to draw
    the maps on, in [0, 1] (default: recovered from `pixel_values` with the run's image processor).
    """

    def __init__(
        self,
        pixel_values: torch.Tensor,
        label: Any = None,
        *,
        every_n_steps: int | None = None,
        on_evaluate: bool = False,
        method: str = "transformer_attribution",
        start_layer: int = 0,
        images: torch.Tensor | None = None,
        cmap: str = "jet",
        alpha: float = 0.5,
    ) -> None:
        if isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 3:
            raise InputError(
                f"pixel_values must be a (B, C, H, W) tensor; got shape {tuple(pixel_values.shape)}. One image "
                "(C, H, W) needs a batch axis: pixel_values[None]. NaFlex patches (B, P, F) from a Siglip2 processor "
                "are not drawn by ExplainCallback: explain such models with hfrel explain or "
                "hfrel.attach(model).explain(**processor(images=..., return_tensors='pt'))."
            )
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise InputError("pixel_values must be a (B, C, H, W) tensor, as the image processor returns it.")
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
        ):
            raise InputError(f"every_n_steps must be a positive int or None, got {every_n_steps!r}.")
        if every_n_steps is None and not on_evaluate:
            raise InputError("ExplainCallback would never run: give every_n_steps=N and/or on_evaluate=True.")
        if not isinstance(method, str):
            raise MethodError(f"ExplainCallback draws one method; got {method!r}. Add one callback per method.")
        method_names(method)
        self.pixel_values = pixel_values.detach().cpu().clone()
        self.label = label
        self.every_n_steps = every_n_steps
        self.explain_on_evaluate = on_evaluate
        self.method = method
        self.start_layer = start_layer
        self.images = None if images is None else images.detach().cpu().clone()
        self.cmap = cmap
        self.alpha = alpha
        self.written: list[Path] = []
        self._writer: Any = None

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self._explain(args, state, kwargs.get("model"), kwargs.get("processing_class"), "step")

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.explain_on_evaluate:
            self._explain(args, state, kwargs.get("model"), kwargs.get("processing_class"), "eval-step")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _explain(
        self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module | None, processor: Any, kind: str
    ) -> None:
        if model is None or not state.is_world_process_zero:
            return
        model = _unwrap(model)
        with _untouched_random_state(), hfrel.attach(model) as explainer:
            explanation = explainer.explain(
                self.pixel_values, self.label, method=self.method, start_layer=self.start_layer
            )
        figure = explanation.cpu().plot(
            self._display_images(processor),
            id2label=getattr(model.config, "id2label", None),
            cmap=self.cmap,
            alpha=self.alpha,
        )
        folder = Path(args.output_dir) / "hfrel"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kind}-{state.global_step:06d}.png"
        figure.savefig(path)
        self.written.append(path)
        if "tensorboard" in (args.report_to or []):
            self._tensorboard(args).add_figure(f"hfrel/{self.method}", figure, global_step=state.global_step)

    def _display_images(self, processor: Any) -> torch.Tensor:
        if self.images is not None:
            return self.images
        if processor is not None and hasattr(processor, "image_mean"):
            return model_view(self.pixel_values, processor)
        flat = self.pixel_values.flatten(1)  # no processor: stretch each image to [0, 1] for display
        low, high = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
        return (self.pixel_values - low) / (high - low).clamp(min=1e-12)

    def _tensorboard(self, args: TrainingArguments) -> Any:
        """A writer beside the Trainer's own runs: `$TENSORBOARD_LOGGING_DIR/hfrel` or `<output_dir>/runs/hfrel`."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            root = os.environ.get("TENSORBOARD_LOGGING_DIR") or os.path.join(args.output_dir, "runs")
            self._writer = SummaryWriter(log_dir=os.path.join(os.path.expanduser(root), "hfrel"))
        return self._writer
