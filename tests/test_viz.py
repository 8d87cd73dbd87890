"""Pictures are checked by content: sizes, the exact blend, and that a synthetic map's hot region
lands where it was put (in overlays, in saved PNGs, and inside panels)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import hfrel
from hfrel import viz
from hfrel._explanation import Explanation

GRAY = np.full((40, 60, 3), 128, dtype=np.uint8)


def _quadrant(height: int = 40, width: int = 60) -> np.ndarray:
    heat = np.zeros((height, width), dtype=np.float32)
    heat[: height // 2, : width // 2] = 1.0  # hot top-left quadrant
    return heat


def _redness(picture: np.ndarray) -> np.ndarray:
    picture = picture.astype(np.float32)
    return picture[..., 0] - picture[..., 2]


def test_overlay_blends_exactly_and_puts_the_hot_region_where_it_was(tmp_path):
    picture = viz.overlay(GRAY, _quadrant(), cmap="jet", alpha=0.5)
    assert isinstance(picture, Image.Image) and picture.size == (60, 40) and picture.mode == "RGB"
    picture.save(tmp_path / "overlay.png")
    saved = np.asarray(Image.open(tmp_path / "overlay.png"))
    jet = matplotlib.colormaps["jet"]
    for value, where in ((1.0, (slice(0, 20), slice(0, 30))), (0.0, (slice(20, 40), slice(0, 60)))):
        expected = np.round((0.5 * 128 / 255 + 0.5 * np.asarray(jet(value)[:3])) * 255)
        assert (saved[where] == expected).all()
    redness = _redness(saved)
    assert (redness[:20, :30] > 0).all()  # jet's top is dark red
    assert (redness[20:] < 0).all() and (redness[:, 30:] < 0).all()  # its bottom dark blue


def test_overlay_leaves_pixels_without_a_map_alone():
    heat = _quadrant()
    heat[:, 50:] = np.nan  # cropped away by the processor
    photo = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    picture = np.asarray(viz.overlay(photo, heat, alpha=0.7))
    np.testing.assert_array_equal(picture[:, 50:], photo[:, 50:])
    assert (picture[:, :50] != photo[:, :50]).any(axis=-1).mean() > 0.9


def test_overlay_alpha_ends_and_other_colormaps():
    np.testing.assert_array_equal(np.asarray(viz.overlay(GRAY, _quadrant(), alpha=0.0)), GRAY)
    pure = np.asarray(viz.overlay(GRAY, _quadrant(), cmap="viridis", alpha=1.0))
    viridis = np.round(np.asarray(matplotlib.colormaps["viridis"](1.0)[:3]) * 255)
    assert (pure[0, 0] == viridis).all()


def test_images_of_every_kind_draw_alike():
    base = np.random.default_rng(1).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    expected = base.astype(np.float32) / 255
    for image in (
        base,
        Image.fromarray(base),
        torch.from_numpy(base).permute(2, 0, 1).float() / 255,  # a (3, H, W) model view
        base.astype(np.int64),
        base.astype(np.uint16) * 257,
        base.astype(np.float64) / 255,
    ):
        np.testing.assert_allclose(viz.to_rgb_array(image), expected, atol=1e-6)
    rgba = np.concatenate([base, np.zeros((8, 6, 1), np.uint8)], axis=-1)
    np.testing.assert_array_equal(viz.to_rgb_array(Image.fromarray(rgba, "RGBA")), 1.0)  # transparent: white


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: viz.overlay(GRAY, np.zeros((20, 30))), r"heatmap is 20x30 but the image is 40x60.*model_view"),
        (lambda: viz.overlay(GRAY, _quadrant() * 3), r"values in \[0, 1\].*not \.relevance"),
        (lambda: viz.overlay(GRAY, np.zeros((2, 40, 60))), r"one 2-D heatmap"),
        (lambda: viz.overlay(GRAY, _quadrant(), alpha=1.5), r"alpha must be in \[0, 1\]"),
        (lambda: viz.overlay(GRAY, _quadrant(), cmap="virdis"), r"unknown colormap 'virdis'.*Close matches: viridis"),
        (
            lambda: viz.overlay(np.full((40, 60, 3), -0.5), _quadrant()),
            r"float images must hold values in \[0, 1\].*model_view",
        ),
        (lambda: viz.overlay(GRAY.astype(np.int32) * 4, _quadrant()), r"integer images must hold values in 0..255"),
        (lambda: viz.overlay(np.zeros((4, 4, 5)), np.zeros((4, 4))), r"expected an image of shape"),
        (lambda: viz.panel(GRAY, [_quadrant()], ["a", "b"]), r"got 1 heatmaps but 2 titles"),
    ],
)
def test_bad_pictures_raise_input_errors(call, message):
    with pytest.raises(hfrel.InputError, match=message):
        call()


def _picture_boxes(figure) -> list[tuple[int, int, int, int]]:
    """Each axis's (left, top, right, bottom) in pixels of the saved PNG (origin top-left)."""
    figure.canvas.draw()
    height = figure.bbox.height
    boxes = []
    for axis in figure.axes:
        box = axis.get_window_extent()
        boxes.append((round(box.x0), round(height - box.y1), round(box.x1), round(height - box.y0)))
    return boxes


def test_panel_shows_input_and_each_map_with_its_title(tmp_path):
    cold = np.zeros((40, 60), dtype=np.float32)
    figure = viz.panel(GRAY, [_quadrant(), cold], ["tabby cat (62.6%)\nrollout", "dog (3.0%)\nrollout"])
    assert [axis.get_title() for axis in figure.axes] == ["input", "tabby cat (62.6%)\nrollout", "dog (3.0%)\nrollout"]
    boxes = _picture_boxes(figure)
    figure.savefig(tmp_path / "panel.png", dpi=100)
    saved = np.asarray(Image.open(tmp_path / "panel.png").convert("RGB"))
    assert saved.shape[:2] == (round(100 * (0.42 + 2.6 * 40 / 60 + 2 * 0.08)), round(100 * (3 * 2.6 + 4 * 0.08)))
    assert [right - left for left, _, right, _ in boxes] == [260, 260, 260]  # one 2.6-inch column each
    left, top, right, bottom = boxes[1]
    half_w, half_h = (right - left) // 2, (bottom - top) // 2
    redness = _redness(saved)
    assert (redness[top + 2 : top + half_h - 2, left + 2 : left + half_w - 2] > 0).all()
    assert (redness[top + half_h + 2 : bottom - 2, left + 2 : right - 2] < 0).all()
    left, top, right, bottom = boxes[2]
    assert (redness[top + 2 : bottom - 2, left + 2 : right - 2] < 0).all()  # the cold map: blue everywhere
    left, top, right, bottom = boxes[0]
    assert (saved[top + 2 : bottom - 2, left + 2 : right - 2] == 128).all()  # the input, untouched


def _explanation(batch: int = 2, targets: int | None = 2) -> Explanation:
    heat = torch.zeros(batch, targets or 1, 40, 60)
    heat[:, :, :20, :30] = 1.0
    labels = torch.arange(batch * (targets or 1)).reshape(batch, -1) % 3
    logits = torch.tensor([[2.0, 1.0, 0.0]]).repeat(batch, 1)
    if targets is None:
        heat, labels = heat[:, 0], labels[:, 0]
    return Explanation("rollout", heat.clone(), heat, labels, logits, 0)


def test_plot_explanation_rows_columns_and_titles():
    exp = _explanation()
    names = {0: "cat", 1: "dog", 2: "fish"}
    views = torch.full((2, 3, 40, 60), 0.5)
    figure = exp.plot(views, id2label=names)
    titles = [axis.get_title() for axis in figure.axes]
    first = ["input", "cat (66.5%)\nrollout", "dog (24.5%)\nrollout"]
    second = ["input", "fish (9.0%)\nrollout", "cat (66.5%)\nrollout"]
    assert titles == [*first, *second]
    shown = figure.axes[1].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(viz.overlay(views[0], exp.heatmap[0, 0])))
    assert len(exp.plot(views, index=-1).axes) == 3
    only_maps = _explanation(targets=None).plot(id2label=names)
    assert [axis.get_title() for axis in only_maps.axes] == ["cat (66.5%)\nrollout", "dog (24.5%)\nrollout"]
    np.testing.assert_allclose(only_maps.axes[0].get_images()[0].get_array(), viz.colorize(exp.heatmap[0, 0]))


def test_plot_explanation_refuses_mismatches():
    exp = _explanation()
    with pytest.raises(hfrel.InputError, match=r"got 1 images for an explanation of 2"):
        exp.plot(torch.zeros(1, 3, 40, 60))
    with pytest.raises(hfrel.InputError, match=r"index 2 is out of range for a batch of 2"):
        exp.plot(index=2)
    with pytest.raises(hfrel.InputError, match=r"heatmap is 40x60 but the image is 32x32"):
        exp.plot(torch.zeros(2, 3, 32, 32))
