"""Picture files for tests that read images from disk."""

from __future__ import annotations

import numpy as np
from PIL import Image


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like uint8 RGB image (smooth colour fields), so resampling does not dominate the maps."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
