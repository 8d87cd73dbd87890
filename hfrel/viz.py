"""Pictures: heatmaps over images, and the paper's side-by-side panels, on matplotlib colormaps.

The CLI, `Explanation.plot` and the demo all draw through these functions, so they look the same.
A heatmap is drawn on the image it was computed for: the image the model saw (`model_view`), or
the original photo after mapping the map back through the processor's geometry (`to_original`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from hfrel._errors import InputError
from hfrel._images import model_view, to_original, to_rgb

if TYPE_CHECKING:
    import matplotlib.colors
    import matplotlib.figure

    from hfrel._explanation import Explanation

__all__ = [
    "colorize",
    "model_view",
    "overlay",
    "panel",
    "plot_explanation",
    "text_figure",
    "to_original",
    "to_rgb_array",
]

_TOLERANCE = 1e-3  # float images and maps may stray this far outside [0, 1] by rounding


def to_rgb_array(image: Any) -> np.ndarray:
    """Any image -> float32 (H, W, 3) array in [0, 1].

    Accepts PIL images (any mode; transparency on white), (H, W) / (H, W, 3) / (H, W, 4) arrays
    (uint8, uint16, other integers in 0..255, or floats in [0, 1]) and (3, H, W) / (1, H, W) tensors
    in [0, 1] such as `model_view`'s. Normalised pixel values are refused, not clipped.
    """
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image), dtype=np.float32) / 255.0
    if isinstance(image, torch.Tensor):
        array = image.detach().float().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.transpose(1, 2, 0)
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"expected an image of shape (H, W), (H, W, 3), (H, W, 4) or a (3, H, W) tensor; got {array.shape}"
        )
    array = array[..., :3]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError("integer images must hold values in 0..255 (or be uint16)")
        return array.astype(np.float32) / 255.0
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"cannot draw an image of dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.size and (not np.isfinite(array).all() or array.min() < -_TOLERANCE or array.max() > 1 + _TOLERANCE):
        raise InputError(
            "float images must hold values in [0, 1]; for a processor's normalised pixel_values, draw "
            "hfrel.viz.model_view(pixel_values, processor) instead"
        )
    return np.clip(array, 0.0, 1.0)


def _heat_array(heatmap: Any) -> np.ndarray:
    """A (H, W) float32 map in [0, 1]; NaN where the map has no value. Anything else is refused."""
    heat = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    heat = np.squeeze(heat).astype(np.float32)
    if heat.ndim != 2:
        raise InputError(f"expected one 2-D heatmap, got shape {heat.shape}")
    known = heat[np.isfinite(heat)]
    if np.isinf(heat).any() or (known.size and (known.min() < -_TOLERANCE or known.max() > 1 + _TOLERANCE)):
        raise InputError(
            "heatmaps must hold values in [0, 1] (NaN for no value): draw Explanation.heatmap, not .relevance"
        )
    return np.clip(heat, 0.0, 1.0)


def _colormap(cmap: str | matplotlib.colors.Colormap) -> matplotlib.colors.Colormap:
    import matplotlib
    import matplotlib.colors

    if isinstance(cmap, matplotlib.colors.Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        close = difflib.get_close_matches(str(cmap), list(matplotlib.colormaps), n=4, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise InputError(
            f"unknown colormap {cmap!r}: use a matplotlib colormap name such as jet, viridis, inferno or turbo.{hint}"
        ) from None


def colorize(heatmap: Any, cmap: str | matplotlib.colors.Colormap = "jet") -> np.ndarray:
    """A (H, W) map in [0, 1] through a matplotlib colormap -> (H, W, 3) float32 array; NaN -> 0."""
    heat = _heat_array(heatmap)
    colored = _colormap(cmap)(np.nan_to_num(heat, nan=0.0))[..., :3].astype(np.float32)
    return np.where(np.isnan(heat)[..., None], np.float32(0.0), colored)


def overlay(
    image: Any, heatmap: Any, cmap: str | matplotlib.colors.Colormap = "jet", alpha: float = 0.5
) -> Image.Image:
    """The heatmap, coloured with `cmap`, blended over the image; `alpha` is the heatmap's weight.

    Image and heatmap must have the same size, so the map is drawn where it was computed: pass the
    image the model saw (`model_view`), or map the heatmap onto the photo with `to_original`. Pixels
    where the heatmap is NaN (outside the processor's crop) keep the image's own colour.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb_array(image)
    heat = _heat_array(heatmap)
    if heat.shape != rgb.shape[:2]:
        raise InputError(
            f"the heatmap is {heat.shape[0]}x{heat.shape[1]} but the image is {rgb.shape[0]}x{rgb.shape[1]}: draw it "
            f"on the image the model saw (hfrel.viz.model_view(pixel_values, processor)), or map it onto the photo "
            f"with hfrel.viz.to_original(heatmap, photo, processor)"
        )
    colored = colorize(heat, cmap)
    blended = np.where(np.isnan(heat)[..., None], rgb, (1.0 - alpha) * rgb + alpha * colored)
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8))


_TITLE = 0.42  # inches above each picture: two lines of 9-point text
_GAP = 0.08  # inches around and between pictures


def _figure(rows: Sequence[Sequence[tuple[Any, str]]], column_size: float) -> matplotlib.figure.Figure:
    """A grid of titled pictures, each `column_size` inches wide, placed by hand (no layout engine):
    fast to draw, and every picture lands at a position known from its row and column."""
    from matplotlib.figure import Figure

    first = np.asarray(rows[0][0][0])
    cell_w, cell_h = column_size, column_size * first.shape[0] / first.shape[1]
    columns = max(len(row) for row in rows)
    width = columns * cell_w + (columns + 1) * _GAP
    height = len(rows) * (_TITLE + cell_h) + (len(rows) + 1) * _GAP
    figure = Figure(figsize=(width, height), facecolor="white")
    for r, row in enumerate(rows):
        bottom = height - (r + 1) * (_GAP + _TITLE + cell_h)
        for c, (picture, title) in enumerate(row):
            left = _GAP + c * (cell_w + _GAP)
            axis = figure.add_axes((left / width, bottom / height, cell_w / width, cell_h / height))
            axis.imshow(picture, aspect="auto", interpolation="nearest")
            axis.set_title(title, fontsize=9, pad=3)
            axis.set_axis_off()
    return figure


def panel(
    image: Any,
    heatmaps: Sequence[Any],
    titles: Sequence[str],
    *,
    input_title: str = "input",
    cmap: str | matplotlib.colors.Colormap = "jet",
    alpha: float = 0.5,
    column_size: float = 2.6,
) -> matplotlib.figure.Figure:
    """The paper's figure: one row with the input, then each heatmap overlaid on it, each titled.

    Save it with `figure.savefig(path, dpi=100)` (then each picture is `column_size * 100` pixels
    wide); the figure is not registered with pyplot, so it is freed with its last reference.
    """
    if len(heatmaps) != len(titles):
        raise InputError(f"got {len(heatmaps)} heatmaps but {len(titles)} titles")
    base = to_rgb_array(image)
    row = [(base, input_title)] + [
        (overlay(base, heat, cmap=cmap, alpha=alpha), title) for heat, title in zip(heatmaps, titles, strict=True)
    ]
    return _figure([row], column_size)


def plot_explanation(
    explanation: Explanation,
    images: Any = None,
    *,
    index: int | None = None,
    id2label: dict[int, str] | None = None,
    cmap: str | matplotlib.colors.Colormap = "jet",
    alpha: float = 0.5,
    column_size: float = 2.6,
) -> matplotlib.figure.Figure:
    """Panels for an explanation, one row per image: the input (if given) and the map of each class,
    titled with the class name, its probability and the method, as `hfrel explain` draws them.

    `images`: what the model saw, B of them, the size of the heatmaps (a (B, 3, H, W) tensor in
    [0, 1] such as `model_view(pixel_values, processor)`, or a list of PIL images / arrays). Without
    images the maps are drawn in the colormap alone. `index` plots one image of the batch.
    """
    stacked = explanation.with_target_axis()  # (B, K, H, W), K = 1 for one target per image
    heat = stacked.heatmap.detach().float().cpu()
    labels = stacked.labels.detach().cpu()
    batch, targets = heat.shape[:2]
    if images is not None and len(images) != batch:
        raise InputError(f"got {len(images)} images for an explanation of {batch}")
    if index is not None and not -batch <= index < batch:
        raise InputError(f"index {index} is out of range for a batch of {batch}")
    probabilities = explanation.probabilities.detach().cpu()
    rows = []
    for b in range(batch) if index is None else [index % batch]:
        base = None if images is None else to_rgb_array(images[b])
        row = [] if base is None else [(base, "input")]
        for t in range(targets):
            cls = int(labels[b, t])
            name = (id2label or {}).get(cls, str(cls))
            picture = colorize(heat[b, t], cmap) if base is None else overlay(base, heat[b, t], cmap, alpha)
            row.append((picture, f"{name} ({float(probabilities[b, cls]):.1%})\n{explanation.method}"))
        rows.append(row)
    return _figure(rows, column_size)


_CHAR = 0.085  # inches per character of the token font (monospace, 10 pt)
_LINE = 0.32  # inches per line of tokens or title


def text_figure(
    tokens: Sequence[Sequence[str]],
    relevance: Sequence[Any],
    titles: Sequence[str] | None = None,
    *,
    cmap: str | matplotlib.colors.Colormap = "Reds",
) -> matplotlib.figure.Figure:
    """Each prompt's tokens on one line, each on a box shaded by its relevance, as the authors' CLIP notebook
    shows text relevance: the positive part, divided by the prompt's largest value (an all-zero prompt stays white).

    `tokens`: per prompt, its token strings; `relevance`: per prompt, one value per token (same lengths);
    `titles`: a line above each prompt (e.g. the prompt and its probability). Save with `savefig(path, dpi=100)`.
    """
    from matplotlib.figure import Figure

    if len(tokens) != len(relevance) or (titles is not None and len(titles) != len(tokens)):
        raise InputError(
            f"got {len(tokens)} token lists, {len(relevance)} relevance lists and "
            f"{'no' if titles is None else len(titles)} titles; give one of each per prompt"
        )
    values = []
    for words, scores in zip(tokens, relevance, strict=True):
        array = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
        if array.shape != (len(words),):
            raise InputError(f"a prompt of {len(words)} tokens got relevance of shape {array.shape}")
        positive = np.clip(np.nan_to_num(array), 0.0, None)
        top = positive.max() if positive.size else 0.0
        values.append(positive / top if top > 0 else positive)
    colormap = _colormap(cmap)
    lines_per_prompt = 2 if titles is not None else 1
    widths = [sum(len(w) + 1 for w in words) * _CHAR + 2 * _GAP for words in tokens]
    widths += [len(title) * 0.075 + 2 * _GAP for title in titles or []]  # 9-point proportional text, generously
    width = max([*widths, 3.0])
    height = len(tokens) * lines_per_prompt * _LINE + 2 * _GAP
    figure = Figure(figsize=(width, height), facecolor="white")
    for p, (words, shades) in enumerate(zip(tokens, values, strict=True)):
        top_line = height - _GAP - p * lines_per_prompt * _LINE
        if titles is not None:
            figure.text(_GAP / width, (top_line - 0.5 * _LINE) / height, titles[p], fontsize=9, va="center")
            top_line -= _LINE
        left = _GAP
        for word, shade in zip(words, shades, strict=True):
            color = colormap(float(shade))
            text_color = "white" if float(shade) > 0.6 else "black"
            figure.text(
                left / width,
                (top_line - 0.5 * _LINE) / height,
                word,
                fontsize=10,
                family="monospace",
                va="center",
                color=text_color,
                bbox={"facecolor": color, "edgecolor": "none", "pad": 1.5},
            )
            left += (len(word) + 1) * _CHAR
    return figure
