"""The perturbation test on a classifier whose answer is known: it looks at one 2 x 2 region only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hfrel import InputError
from hfrel.evaluation import STEPS, model_view, normaliser, perturbation_auc, perturbation_hits, removed_counts


class RegionClassifier(nn.Module):
    """Class 1 while the mean of a 2 x 2 region of an 8 x 8 image, over all channels, exceeds 0.5; else class 0."""

    def __init__(self, rows: slice, columns: slice) -> None:
        super().__init__()
        self.rows, self.columns = rows, columns

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        level = images[:, :, self.rows, self.columns].mean(dim=(1, 2, 3))
        return torch.stack([0.5 - level, level - 0.5], dim=-1)


TOP_LEFT = RegionClassifier(slice(0, 2), slice(0, 2))
BOTTOM_RIGHT = RegionClassifier(slice(6, 8), slice(6, 8))
WHITE = torch.ones(1, 3, 8, 8)  # region bright: class 1


def on_region(value_inside: float, value_outside: float) -> torch.Tensor:
    relevance = torch.full((1, 8, 8), float(value_outside))
    relevance[:, 0:2, 0:2] = value_inside
    return relevance


def test_removed_pixel_counts():
    # 64 pixels: floor(64 * k / 10)
    assert removed_counts(64) == [6, 12, 19, 25, 32, 38, 44, 51, 57]
    # at 224 x 224 these are the reference's int(50176 * p)
    assert removed_counts(224 * 224) == [5017, 10035, 15052, 20070, 25088, 30105, 35123, 40140, 45158]
    # 90 * 0.7 is 62.99999999999999 in floats; the fraction removed is exactly 63 pixels
    assert removed_counts(90)[6] == 63


def test_a_map_on_the_region_the_model_reads():
    """Positive: the region goes first (with 2 raster-order ties at p = 0.1), so every step misses.
    Negative: the 60 other pixels go first and at most 57 are removed, so every step hits."""
    covering = on_region(1.0, 0.0)
    positive = perturbation_hits(TOP_LEFT, WHITE, covering, [1], test="positive")
    negative = perturbation_hits(TOP_LEFT, WHITE, covering, [1], test="negative")
    assert positive.tolist() == [[True] + [False] * 9]
    assert negative.tolist() == [[True] * 10]
    assert perturbation_auc(positive[0].double()) == pytest.approx(10 * (1 + 0) / 2)  # 5
    assert perturbation_auc(negative[0].double()) == pytest.approx(90.0)


def test_a_map_that_misses_the_region():
    missing = on_region(0.0, 1.0)
    assert perturbation_hits(TOP_LEFT, WHITE, missing, [1], test="positive").tolist() == [[True] * 10]
    assert perturbation_hits(TOP_LEFT, WHITE, missing, [1], test="negative").tolist() == [[True] + [False] * 9]


def test_ties_are_removed_in_raster_order():
    """A constant map removes pixels row by row from the top left: the bottom-right region's first two pixels
    (raster indices 54, 55) go only at p = 0.9 (57 removed), leaving its mean at 0.5, which is not above 0.5."""
    constant = torch.zeros(1, 8, 8)
    for test in ("positive", "negative"):
        hits = perturbation_hits(BOTTOM_RIGHT, WHITE, constant, [1], test=test)
        assert hits.tolist() == [[True] * 9 + [False]], test


def test_removed_pixels_are_zero_in_every_channel_then_normalised():
    seen = []

    def classify(inputs):
        seen.append(inputs.clone())
        return torch.zeros(inputs.shape[0], 2)

    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    relevance = torch.arange(64.0).view(1, 8, 8)  # pixel i ranks by i: positive removes 63, 62, ...
    perturbation_hits(classify, images, relevance, [0], normalise=lambda x: 2 * x - 1)
    inputs = torch.cat(seen)  # (10, 3, 8, 8) for p = 0, 0.1, ..., 0.9
    assert inputs.shape == (10, 3, 8, 8)
    for step, removed in enumerate([0, *removed_counts(64)]):
        gone = torch.zeros(64, dtype=torch.bool)
        gone[64 - removed :] = True
        flat = inputs[step].flatten(1)
        assert torch.equal(flat[:, gone], torch.full_like(flat[:, gone], -1.0))  # 0 -> 2 * 0 - 1
        assert torch.allclose(flat[:, ~gone], 2 * images[0].flatten(1)[:, ~gone] - 1)


def test_normaliser_inverts_the_processors_view():
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(
        size={"height": 8, "width": 8}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]
    )
    pictures = (torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8).numpy()
    pixel_values = processor(images=list(pictures), return_tensors="pt")["pixel_values"]
    images = model_view(pixel_values, processor)
    assert torch.allclose(normaliser(processor)(images), pixel_values, atol=1e-6)
    plain = ViTImageProcessor(do_normalize=False)
    assert torch.equal(normaliser(plain)(images), images)


def test_any_callable_with_logits_batches_and_chunks():
    """A transformers-style output works; a batch equals its images alone; chunking changes nothing."""
    images = torch.cat([WHITE, WHITE, torch.zeros(1, 3, 8, 8)])
    maps = torch.cat([on_region(1.0, 0.0), on_region(0.0, 1.0), torch.rand(1, 8, 8)])
    labels = torch.tensor([1, 1, 0])

    def wrapped(inputs):
        return SimpleNamespace(logits=TOP_LEFT(inputs))

    together = perturbation_hits(wrapped, images, maps, labels, test="positive")
    chunked = perturbation_hits(wrapped, images, maps, labels, test="positive", batch_size=7)
    alone = torch.cat(
        [perturbation_hits(TOP_LEFT, images[i : i + 1], maps[i : i + 1], labels[i : i + 1]) for i in range(3)]
    )
    assert torch.equal(together, chunked) and torch.equal(together, alone)
    assert together[2].all()  # a black image stays class 0 whatever is removed
    steps_only = perturbation_hits(TOP_LEFT, images, maps, labels, unperturbed=False)
    assert torch.equal(steps_only, together[:, 1:])


def test_low_resolution_maps_are_upsampled():
    # a 2 x 2 map whose top-left cell is high becomes, upsampled to 8 x 8, highest on the top-left region
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert perturbation_hits(TOP_LEFT, WHITE, coarse, [1]).tolist() == [[True] + [False] * 9]


def test_auc_by_hand():
    assert len(STEPS) == 10 and STEPS[0] == 0.0 and STEPS[-1] == 0.9
    assert perturbation_auc([1.0] * 10) == pytest.approx(90.0)
    # trapezoids 0.1 wide: (1 + 0.5) / 2 + (0.5 + 0) / 2, times 0.1, times 100
    assert perturbation_auc([1.0, 0.5] + [0.0] * 8) == pytest.approx(10.0)
    assert perturbation_auc(torch.linspace(1, 0.1, 10)) == pytest.approx(100 * 0.9 * 0.55)
    with pytest.raises(InputError, match="10 points"):
        perturbation_auc([1.0] * 9)
    with pytest.raises(InputError, match=r"fractions in \[0, 1\]"):
        perturbation_auc([100.0] * 10)


def test_bad_inputs():
    with pytest.raises(InputError, match="one label per image"):
        perturbation_hits(TOP_LEFT, WHITE, on_region(1.0, 0.0), [1, 0])
    with pytest.raises(InputError, match="one map per image"):
        perturbation_hits(TOP_LEFT, WHITE, torch.rand(2, 8, 8), [1])
    with pytest.raises(InputError, match="'positive' or 'negative'"):
        perturbation_hits(TOP_LEFT, WHITE, on_region(1.0, 0.0), [1], test="both")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="NaN"):
        perturbation_hits(TOP_LEFT, WHITE, torch.full((1, 8, 8), float("nan")), [1])
    with pytest.raises(InputError, match="logits of shape"):
        perturbation_hits(lambda x: x.sum(), WHITE, on_region(1.0, 0.0), [1])
