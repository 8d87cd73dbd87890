"""The paper's perturbation test: remove pixels in the order a map ranks them and watch top-1 accuracy.

Positive test: the most relevant pixels go first, so a faithful map makes accuracy fall fast (low AUC).
Negative test: the least relevant go first, so accuracy should hold (high AUC). Pixels are set to 0 in
every channel of the [0, 1] image, then the model's own normalisation is applied again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from hfrel._errors import InputError
from hfrel._explanation import to_heatmap

Test = Literal["positive", "negative"]
TESTS: tuple[str, ...] = ("positive", "negative")
# x axis of the curves: the fraction of pixels removed; 0 is the unperturbed image.
STEPS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def removed_counts(pixels: int) -> list[int]:
    """Pixels removed at p = 0.1 .. 0.9 out of `pixels`: floor(pixels * k / 10), in exact integers (the
    reference's int(pixels * p) agrees at 224 x 224, and cannot lose a pixel to float rounding here)."""
    return [pixels * k // 10 for k in range(1, 10)]


def normaliser(processor: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image processor's normalisation as a function of (B, C, H, W) images in [0, 1]: the inverse of
    `model_view`, so perturbed images reach the model exactly as the processor would have sent them."""
    rescale = getattr(processor, "do_rescale", True) is not False
    if getattr(processor, "do_normalize", False):
        mean = torch.as_tensor(processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
    else:
        mean = std = None

    def normalise(images: torch.Tensor) -> torch.Tensor:
        pixels = images if rescale else images * 255.0
        if mean is not None:
            pixels = (pixels - mean.to(pixels.device)) / std.to(pixels.device)
        return pixels

    return normalise


def perturbation_hits(
    classify: Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    maps: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    *,
    test: Test = "positive",
    normalise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int | None = None,
    unperturbed: bool = True,
) -> torch.Tensor:
    """Top-1 hits on perturbed images: (B, 10) booleans at STEPS (0, 0.1, ..., 0.9 of the pixels removed).

    `classify`: any callable from model inputs to logits (a tensor, or an output with `.logits`, such as a
    transformers model). `images`: (B, C, H, W) in [0, 1] (`model_view` recovers them from pixel values).
    `maps`: (B, h, w), upsampled bilinearly to (H, W) and min-max normalised. `labels`: the class each
    image should be classified as. `normalise`: [0, 1] images -> model inputs (`normaliser(processor)`).
    Ties in a map are removed in raster order (row by row from the top left) in both tests. `batch_size`
    caps the images per forward call (default: all B x 9 perturbed images at once). With
    `unperturbed=False` the first column (p = 0) is left out and the result is (B, 9).
    """
    if test not in TESTS:
        raise InputError(f"test must be 'positive' or 'negative'; got {test!r}.")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise InputError(
            f"images must be a float tensor (B, C, H, W) in [0, 1]; got "
            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}."
        )
    batch, _, height, width = images.shape
    if batch == 0:
        raise InputError("no image to perturb (batch size 0).")
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3 or maps.shape[0] != batch or not maps.is_floating_point():
        raise InputError(
            f"maps must be a float tensor (B, h, w) with one map per image ({batch}); got "
            f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}."
        )
    if not bool(torch.isfinite(maps).all()):
        raise InputError("maps contain NaN or infinite values; only finite maps give a removal order.")
    targets = torch.as_tensor(labels, dtype=torch.long).flatten().to(images.device)
    if targets.shape[0] != batch:
        raise InputError(f"got {targets.shape[0]} labels for {batch} images; pass one label per image.")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be at least 1; got {batch_size}.")

    heat = to_heatmap(maps.to(images.device), (height, width)).flatten(1)
    order = torch.argsort(heat, dim=-1, descending=test == "positive", stable=True)
    position = torch.empty_like(order)  # each pixel's place in the removal order
    position.scatter_(-1, order, torch.arange(height * width, device=order.device).expand_as(order))
    counts = torch.tensor(removed_counts(height * width), device=images.device)
    steps = len(counts) + unperturbed
    if unperturbed:
        counts = torch.cat([counts.new_zeros(1), counts])

    total = batch * steps
    chunk = total if batch_size is None else batch_size
    predictions = []
    with torch.no_grad():
        for start in range(0, total, chunk):
            index = torch.arange(start, min(start + chunk, total), device=images.device)
            image, step = index // steps, index % steps
            keep = (position[image] >= counts[step].unsqueeze(-1)).view(-1, 1, height, width)
            perturbed = torch.where(keep, images[image], torch.zeros((), dtype=images.dtype, device=images.device))
            inputs = normalise(perturbed) if normalise is not None else perturbed
            predictions.append(_logits(classify(inputs)).argmax(-1).to(images.device))
    return torch.cat(predictions).view(batch, steps) == targets.unsqueeze(-1)


def _logits(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise InputError(
            f"classify must return logits of shape (B, num_classes) (or an output with .logits); got "
            f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}."
        )
    return logits


def perturbation_auc(accuracy: torch.Tensor | Sequence[float]) -> float:
    """Area under a perturbation curve: top-1 accuracy in [0, 1] at the ten STEPS, by the trapezoid rule over
    x = 0, 0.1, ..., 0.9, times 100 (so at most 90)."""
    curve = torch.as_tensor(accuracy, dtype=torch.float64).flatten()
    if curve.shape[0] != len(STEPS):
        raise InputError(f"a perturbation curve has {len(STEPS)} points (p = 0, 0.1, ..., 0.9); got {curve.shape[0]}.")
    if bool(((curve < 0) | (curve > 1) | ~torch.isfinite(curve)).any()):
        raise InputError(f"accuracies must be fractions in [0, 1]; got {curve.tolist()}.")
    # the steps are all 0.1 wide: 100 * 0.1 * sum of the trapezoids' mean heights
    return 10 * float(((curve[1:] + curve[:-1]) / 2).sum())
