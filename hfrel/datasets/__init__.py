"""Synthetic scenes with ground-truth masks, and the demo model trained on them: everything works offline.

scenes = make_scenes(8, objects=2, seed=2)  # images, labels (N, K), masks (N, K, H, W)
model, processor = load_demo_model()
clip, processor = load_zero_shot_model()  # prompts: ZERO_SHOT_PROMPTS ("a photo of a disk", ...)
"""

from hfrel.datasets._demo_model import (
    ZERO_SHOT_PROMPTS,
    demo_model_path,
    load_demo_model,
    load_zero_shot_model,
    zero_shot_model_path,
)
from hfrel.datasets._scenes import CLASS_NAMES, IMAGE_SIZE, MAX_OBJECTS, SceneDataset, export_folder, make_scenes

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "MAX_OBJECTS",
    "ZERO_SHOT_PROMPTS",
    "SceneDataset",
    "demo_model_path",
    "export_folder",
    "load_demo_model",
    "load_zero_shot_model",
    "make_scenes",
    "zero_shot_model_path",
]
