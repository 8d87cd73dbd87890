"""Pictures: heatmaps over images, and the paper's side-by-side panels, on matplotlib colormaps.

The CLI, `Explanation.plot` and the demo all draw through these functions, so they look the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    import matplotlib.figure

    from hfrel._explanation import Explanation


def to_rgb_array(image: Any) -> np.ndarray:
    """Any image (PIL, HxWx3 / HxW array, (3, H, W) tensor in [0, 1]) -> float32 HxWx3 array in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(image, torch.Tensor):
        array = image.detach().float().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.transpose(1, 2, 0)
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (3, H, W); got {array.shape}")
    array = array[..., :3]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _heat_array(heatmap: Any, size: tuple[int, int]) -> np.ndarray:
    """A (H, W) map in [0, 1] as a float array, resized bilinearly to `size` (height, width) if needed."""
    heat = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    heat = np.squeeze(heat).astype(np.float32)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heat.shape}")
    if heat.shape != tuple(size):
        resized = Image.fromarray(heat, mode="F").resize((size[1], size[0]), Image.BILINEAR)
        heat = np.asarray(resized, dtype=np.float32)
    return np.clip(heat, 0.0, 1.0)


def colorize(heatmap: Any, cmap: str = "jet") -> np.ndarray:
    """A (H, W) map in [0, 1] through a matplotlib colormap -> HxWx3 float array."""
    import matplotlib

    heat = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    return matplotlib.colormaps[cmap](np.clip(np.squeeze(heat), 0.0, 1.0))[..., :3].astype(np.float32)


def overlay(image: Any, heatmap: Any, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """The heatmap, coloured with `cmap`, blended over the image (`alpha` is the heatmap's weight).

    The heatmap is resized to the image if their sizes differ, so a map computed on the model's input
    can be drawn on the original photo as well.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb_array(image)
    colored = colorize(_heat_array(heatmap, rgb.shape[:2]), cmap)
    blended = (1.0 - alpha) * rgb + alpha * colored
    return Image.fromarray(np.round(blended * 255).astype(np.uint8), mode="RGB")


def panel(
    image: Any,
    heatmaps: Sequence[Any],
    titles: Sequence[str],
    *,
    input_title: str = "input",
    cmap: str = "jet",
    alpha: float = 0.5,
    column_size: float = 2.6,
) -> matplotlib.figure.Figure:
    """One row: the input, then one overlay per heatmap, each titled (class name, probability, method)."""
    from matplotlib.figure import Figure

    if len(heatmaps) != len(titles):
        raise ValueError(f"got {len(heatmaps)} heatmaps but {len(titles)} titles")
    columns = 1 + len(heatmaps)
    figure = Figure(figsize=(column_size * columns, column_size + 0.4), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(to_rgb_array(image))
    axes[0].set_title(input_title, fontsize=9)
    for axis, heat, title in zip(axes[1:], heatmaps, titles, strict=True):
        axis.imshow(overlay(image, heat, cmap=cmap, alpha=alpha))
        axis.set_title(title, fontsize=9)
    for axis in axes:
        axis.axis("off")
    return figure


def plot_explanation(
    explanation: Explanation,
    images: Any = None,
    *,
    index: int | None = None,
    id2label: dict[int, str] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> matplotlib.figure.Figure:
    """Rows of panels for an explanation: per image, the input and the map of each explained class."""
    from matplotlib.figure import Figure

    heat = explanation.heatmap.detach().cpu()
    labels = explanation.labels.detach().cpu()
    if heat.dim() == 3:  # one target per image -> (B, 1, H, W)
        heat, labels = heat[:, None], labels[:, None]
    probs = explanation.probabilities.detach().cpu()
    rows = range(heat.shape[0]) if index is None else [index]
    targets = heat.shape[1]
    columns = targets + (images is not None)
    figure = Figure(figsize=(2.6 * columns, 2.8 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, b in enumerate(rows):
        first = 0
        if images is not None:
            axes[row][0].imshow(to_rgb_array(images[b]))
            axes[row][0].set_title("input", fontsize=9)
            first = 1
        for t in range(targets):
            cls = int(labels[b, t])
            name = (id2label or {}).get(cls, str(cls))
            base = images[b] if images is not None else np.zeros((*heat.shape[-2:], 3), dtype=np.float32)
            axes[row][first + t].imshow(
                overlay(base, heat[b, t], cmap=cmap, alpha=alpha if images is not None else 1.0)
            )
            axes[row][first + t].set_title(f"{name} ({probs[b, cls]:.0%}) {explanation.method}", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    return figure
