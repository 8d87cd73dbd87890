"""Segmentation and localisation metrics against cases computed by hand from the definitions."""

from __future__ import annotations

import re

import pytest
import torch

from hfrel import InputError
from hfrel._explanation import to_heatmap
from hfrel.evaluation import (
    LocalisationScores,
    average_precision,
    foreground,
    localisation_scores,
    otsu_threshold,
    pointing_game,
    prepare,
    rank_accuracy,
    relevance_mass,
    segmentation_average_precision,
)

# One 2 x 2 image, by hand. The map is already min-max normalised; its mean is 1.75 / 4 = 0.4375, so the
# predicted foreground is {(0,0), (1,0)}; the object is {(0,0), (1,0), (1,1)}.
MAP_A = torch.tensor([[[1.0, 0.25], [0.5, 0.0]]])
MASK_A = torch.tensor([[[1, 0], [1, 1]]])


def test_one_image_by_hand():
    scores = localisation_scores(MAP_A, MASK_A)
    assert scores.correct.tolist() == [3]  # only (1,1) is wrong
    assert scores.pixels.tolist() == [4]
    # background: predicted {(0,1), (1,1)}, true {(0,1)}; foreground: predicted {(0,0), (1,0)}, true 3 pixels
    assert scores.intersection.tolist() == [[1, 2]]
    assert scores.union.tolist() == [[2, 3]]
    # AP over the 8 scores [map ; 1 - map]: ranked 1.0 (T, F), 0.75 (T), 0.5 (T, F), 0.25 (F), 0 (T, F), 4 positives
    # = 1/4 * (1/2) + 1/4 * (2/3) + 1/4 * (3/5) + 1/4 * (4/8) = 17/30
    assert scores.average_precision.item() == pytest.approx(17 / 30, abs=1e-12)
    assert scores.pointing_game.item() == 1.0  # the maximum (0,0) is on the object
    assert scores.relevance_mass.item() == pytest.approx(1.5 / 1.75, abs=1e-12)
    # K = 3 most relevant pixels: 1.0 (in), 0.5 (in), 0.25 (out)
    assert scores.rank_accuracy.item() == pytest.approx(2 / 3, abs=1e-12)
    summary = scores.summary()
    assert summary["pixel_accuracy"] == pytest.approx(75.0)
    assert summary["iou_background"] == pytest.approx(50.0)
    assert summary["iou_foreground"] == pytest.approx(200 / 3)
    assert summary["miou"] == pytest.approx((50.0 + 200 / 3) / 2)
    assert summary["map"] == pytest.approx(1700 / 30)


def test_dataset_totals_accumulate_pixels_before_dividing():
    """Pixel accuracy and IoU add counts over the dataset (the paper's totals), not per-image ratios."""
    # Image B: 1 x 2, map [0, 1] (mean 0.5: foreground {1}), object {0}: everything is wrong.
    map_b, mask_b = torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[1, 0]]])
    scores = LocalisationScores.cat([localisation_scores(MAP_A, MASK_A), localisation_scores(map_b, mask_b)])
    summary = scores.summary()
    assert summary["pixel_accuracy"] == pytest.approx(100 * 3 / 6)  # not (75 + 0) / 2
    assert summary["iou_background"] == pytest.approx(100 * (1 + 0) / (2 + 2))
    assert summary["iou_foreground"] == pytest.approx(100 * (2 + 0) / (3 + 2))
    assert summary["miou"] == pytest.approx(100 * (1 / 4 + 2 / 5) / 2)
    # B's AP: scores 1.0 (F, F) then 0.0 (T, T): 2/2 * 2/4 = 1/2; mAP averages over images
    assert summary["map"] == pytest.approx(100 * (17 / 30 + 1 / 2) / 2)
    assert summary["pointing_game"] == pytest.approx(100 * (1 + 0) / 2)
    assert summary["relevance_mass"] == pytest.approx(100 * (1.5 / 1.75 + 0) / 2)
    assert summary["rank_accuracy"] == pytest.approx(100 * (2 / 3 + 0) / 2)


def test_average_precision_by_hand():
    # scores 0.8 (T), 0.4 (F), 0.35 (T), 0.1 (F): 1/2 * 1 + 1/2 * 2/3 = 5/6
    ap = average_precision(torch.tensor([[0.1, 0.4, 0.35, 0.8]]), torch.tensor([[0, 0, 1, 1]]))
    assert ap.item() == pytest.approx(5 / 6, abs=1e-12)
    # tied scores enter together: 0.5 (T, F, T) then 0.2 (T): 2/3 * 2/3 + 1/3 * 3/4
    ap = average_precision(torch.tensor([[0.5, 0.5, 0.2, 0.5]]), torch.tensor([[1, 0, 1, 1]]))
    assert ap.item() == pytest.approx(4 / 9 + 1 / 4, abs=1e-12)
    # batched rows are independent
    both = average_precision(
        torch.tensor([[0.1, 0.4, 0.35, 0.8], [0.5, 0.5, 0.2, 0.5]]), torch.tensor([[0, 0, 1, 1], [1, 0, 1, 1]])
    )
    assert both.tolist() == pytest.approx([5 / 6, 4 / 9 + 1 / 4], abs=1e-12)


def test_otsu_and_mean_thresholds_by_hand():
    # values 0.1, 0.2, 0.8, 0.9: between-class variance is largest (0.25 * 0.7^2) splitting after 0.2
    assert otsu_threshold(torch.tensor([[[0.8, 0.1], [0.9, 0.2]]])).item() == pytest.approx(0.2)
    # values 0, 0.5, 0.75, 1: splits after 0 / 0.5 / 0.75 give 0.1875 * 0.5625, 0.25 * 0.390625, 0.1875 * 0.3403
    maps = torch.tensor([[[0.0, 0.5], [0.75, 1.0]]])
    assert otsu_threshold(maps).item() == 0.0
    assert foreground(maps, "otsu").tolist() == [[[False, True], [True, True]]]
    assert foreground(maps, "mean").tolist() == [[[False, False], [True, True]]]  # mean 0.5625
    # a constant map has no split: nothing is foreground
    assert not foreground(torch.full((1, 2, 2), 0.3), "otsu").any()
    scores = localisation_scores(maps, torch.tensor([[[0, 1], [1, 1]]]), threshold="otsu")
    assert scores.correct.tolist() == [4]


def test_ties_share_the_credit():
    # two maxima, one on the object: the expected hit of a random choice among them
    maps, masks = prepare(torch.tensor([[[1.0, 1.0], [0.0, 0.5]]]), torch.tensor([[[1, 0], [0, 0]]]))
    assert pointing_game(maps, masks).item() == 0.5
    # K = 2; 1.0 is out of the object; three pixels tie at 0.5 for the one place left, two of them inside
    maps, masks = prepare(torch.tensor([[[1.0, 0.5], [0.5, 0.5]]]), torch.tensor([[[0, 1], [1, 0]]]))
    assert rank_accuracy(maps, masks).item() == pytest.approx((0 + 1 * 2 / 3) / 2, abs=1e-12)


def test_constant_map_scores_as_uniform():
    """A constant map (normalised to all zeros) carries no information: every pixel ties."""
    mask = torch.tensor([[[1, 0], [0, 0]]])
    scores = localisation_scores(torch.full((1, 2, 2), 7.0), mask)
    assert scores.correct.tolist() == [3]  # nothing above the mean: all background
    assert scores.average_precision.item() == 0.5  # all 8 scores tie, 4 of them positive
    assert scores.pointing_game.item() == 0.25
    assert scores.relevance_mass.item() == 0.25
    assert scores.rank_accuracy.item() == 0.25
    assert (
        segmentation_average_precision(*prepare(torch.zeros(1, 3, 3), torch.ones(1, 3, 3, dtype=torch.bool))).item()
        == 0.5
    )


def test_relevance_mass_and_normalisation():
    # raw map 2, 4, 6, 10 -> normalised 0, 0.25, 0.5, 1; the object holds 0.5 + 1 of 1.75
    raw = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]])
    maps, masks = prepare(raw, torch.tensor([[[0, 0], [1, 1]]]))
    assert maps.tolist() == [[[0.0, 0.25], [0.5, 1.0]]]
    assert relevance_mass(maps, masks).item() == pytest.approx(1.5 / 1.75, abs=1e-12)


def test_patch_grid_maps_are_upsampled_to_the_mask():
    raw = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    masks = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.6
    direct = localisation_scores(raw, masks)
    upsampled = localisation_scores(to_heatmap(raw, (16, 16)), masks)
    for name in ("correct", "intersection", "union", "average_precision", "pointing_game", "rank_accuracy"):
        assert torch.equal(getattr(direct, name), getattr(upsampled, name)), name


def test_a_batch_equals_its_images_alone():
    generator = torch.Generator().manual_seed(2)
    maps = torch.rand(3, 6, 6, generator=generator) ** 2
    maps[1] = (maps[1] * 4).round()  # ties
    masks = torch.rand(3, 12, 12, generator=generator) > 0.5
    together = localisation_scores(maps, masks, threshold="otsu")
    alone = LocalisationScores.cat([localisation_scores(maps[i : i + 1], masks[i : i + 1], "otsu") for i in range(3)])
    for name in LocalisationScores.__dataclass_fields__:
        assert torch.allclose(getattr(together, name).double(), getattr(alone, name).double(), atol=1e-12), name


@pytest.mark.parametrize(
    ("maps", "masks", "message"),
    [
        (torch.rand(2, 4, 4), torch.ones(3, 4, 4, dtype=torch.bool), "2 maps for 3 masks"),
        (torch.rand(4, 4), torch.ones(4, 4, dtype=torch.bool), "shape (B, h, w)"),
        (torch.tensor([[[float("nan"), 1.0]]]), torch.ones(1, 1, 2, dtype=torch.bool), "NaN"),
        (torch.rand(2, 2, 2), torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]]), "masks [1] have no object"),
        (torch.rand(1, 2, 2), torch.rand(1, 2, 2), "boolean or integer"),
        (torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2), "floating point"),
    ],
)
def test_bad_inputs_say_what_is_wrong(maps, masks, message):
    with pytest.raises(InputError, match=re.escape(message)):
        localisation_scores(maps, masks)


def test_bad_options():
    with pytest.raises(InputError, match="threshold must be one of mean, otsu"):
        foreground(torch.rand(1, 2, 2), "median")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no positive target"):
        average_precision(torch.rand(2, 3), torch.tensor([[0, 1, 0], [0, 0, 0]]))


def test_map_correlation_by_hand():
    from hfrel.evaluation import map_correlation

    ramp = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    flat = torch.full((2, 2), 5.0)
    maps = torch.stack([ramp, ramp, flat, flat])
    other = torch.stack([2 * ramp + 1, -ramp, flat * 2, ramp])
    torch.testing.assert_close(map_correlation(maps, other), torch.tensor([1.0, -1.0, 1.0, 0.0], dtype=torch.float64))
    bent = torch.tensor([[0.0, 1.0], [3.0, 2.0]])  # deviations (-1.5, -0.5, 1.5, 0.5) vs (-1.5, -0.5, 0.5, 1.5)
    assert map_correlation(ramp, bent).item() == pytest.approx(4.0 / 5.0)
