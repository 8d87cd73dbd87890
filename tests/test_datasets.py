"""Synthetic scenes (determinism, exact masks, Dataset, folder export) and the bundled demo model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import hfrel
from hfrel.datasets import (
    CLASS_NAMES,
    IMAGE_SIZE,
    SceneDataset,
    demo_model_path,
    export_folder,
    load_demo_model,
    make_scenes,
)
from hfrel.datasets._demo_model import EVALUATION_SEED, TRAINING_SEED
from hfrel.datasets._scores import heat_on_objects, own_and_other_heat, pointing_hits


def _channel_spread(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W): max minus min over the colour channels (0 for greys)."""
    return images.amax(dim=1) - images.amin(dim=1)


# determinism ----------------------------------------------------------------------------------


def test_same_seed_same_scenes_and_other_seed_other_scenes():
    first = make_scenes(6, objects=2, seed=11)
    again = make_scenes(6, objects=2, seed=11)
    other = make_scenes(6, objects=2, seed=12)
    assert torch.equal(first.images, again.images) and torch.equal(first.masks, again.masks)
    assert torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)


def test_a_scene_does_not_depend_on_n_or_start():
    """Scenes are drawn in fixed blocks: a window across a block boundary equals the same rows of a longer run."""
    long = make_scenes(270, seed=4)
    window = make_scenes(20, seed=4, start=250)
    assert torch.equal(long.images[250:270], window.images)
    assert torch.equal(long.labels[250:270], window.labels)
    assert torch.equal(long.masks[250:270], window.masks)


def test_object_counts_draw_independent_scenes():
    assert not torch.equal(make_scenes(4, objects=1, seed=0).images, make_scenes(4, objects=2, seed=0).images)


# content and masks ----------------------------------------------------------------------------


@pytest.mark.parametrize("objects", [1, 2, 3])
def test_tensors_have_the_documented_shapes_and_values(objects):
    scenes = make_scenes(40, objects=objects, seed=7)
    assert scenes.images.shape == (40, 3, IMAGE_SIZE, IMAGE_SIZE) and scenes.images.dtype == torch.float32
    assert scenes.labels.shape == (40, objects) and scenes.labels.dtype == torch.int64
    assert scenes.masks.shape == (40, objects, IMAGE_SIZE, IMAGE_SIZE) and scenes.masks.dtype == torch.bool
    assert scenes.images.min() >= 0 and scenes.images.max() <= 1
    assert torch.equal(torch.round(scenes.images * 255) / 255, scenes.images)  # lossless as 8-bit PNG
    assert scenes.labels.min() >= 0 and scenes.labels.max() < len(CLASS_NAMES)
    for row in scenes.labels.tolist():
        assert len(set(row)) == objects  # distinct classes within a scene


@pytest.mark.parametrize("objects", [1, 2, 3])
def test_masks_are_exactly_the_painted_pixels(objects):
    """Each mask is one flat colour, saturated; every other pixel is low-saturation background."""
    scenes = make_scenes(60, objects=objects, seed=8)
    masks = scenes.masks
    assert (masks.flatten(2).sum(-1) > 20).all()  # every object is visible
    assert (masks.sum(dim=1) <= 1).all()  # objects never overlap
    spread = _channel_spread(scenes.images)
    union = masks.any(dim=1)
    assert torch.equal(spread > 0.3, union)  # saturated pixels == object pixels, exactly
    assert spread[~union].max() <= 0.1 + 1 / 255
    assert spread[union].min() >= 0.64 - 1 / 255
    pixels = scenes.images.permute(0, 2, 3, 1)  # (N, H, W, 3)
    for n in range(len(scenes)):
        for k in range(objects):
            colours = pixels[n][masks[n, k]]
            assert torch.equal(colours, colours[:1].expand_as(colours)), "an object is one flat colour"


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in [0, 1) of (..., 3) colours, the usual hexcone formula."""
    r, g, b = rgb.unbind(-1)
    top, low = rgb.amax(-1), rgb.amin(-1)
    span = top - low
    hue = torch.where(top == r, ((g - b) / span) % 6, torch.where(top == g, (b - r) / span + 2, (r - g) / span + 4))
    return hue / 6


def test_each_class_has_its_shape_and_its_hue_family():
    scenes = make_scenes(300, seed=9)
    masks, labels = scenes.masks[:, 0], scenes.labels[:, 0]
    pixels = scenes.images.permute(0, 2, 3, 1)
    for n in range(len(scenes)):
        mask, name = masks[n], CLASS_NAMES[labels[n]]
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        fill = box.float().mean().item()
        centre = box[box.shape[0] // 2, box.shape[1] // 2].item()
        widths = box.sum(1)
        expected_fill = {"disk": (0.7, 0.85), "ring": (0.45, 0.65), "square": (0.99, 1.0)}
        if name in expected_fill:
            low, high = expected_fill[name]
            assert low <= fill <= high, (name, fill)
        if name == "ring":
            assert not centre  # the hole
        if name in ("disk", "square", "diamond", "cross"):
            assert centre
        if name == "triangle":
            assert widths[0] < widths[-1] / 3  # apex up
        if name == "diamond":
            assert widths[0] < widths[len(widths) // 2] / 3 and widths[-1] < widths[len(widths) // 2] / 3
        hue = _hue(pixels[n][mask][0])
        distance = (hue - labels[n] / len(CLASS_NAMES) + 0.5) % 1.0 - 0.5  # signed, around the circle
        assert abs(distance) <= 0.05 + 0.01, (name, hue)


def test_scene_classes_cover_every_class():
    counts = torch.bincount(make_scenes(256, seed=TRAINING_SEED).labels[:, 0], minlength=len(CLASS_NAMES))
    assert (counts > 20).all()


# Dataset protocol and bad arguments -----------------------------------------------------------


def test_scene_dataset_works_with_a_dataloader():
    scenes = make_scenes(10, objects=2, seed=1)
    assert isinstance(scenes, torch.utils.data.Dataset) and len(scenes) == 10 and scenes.objects == 2
    image, labels, masks = scenes[3]
    assert image.shape == (3, 64, 64) and labels.shape == (2,) and masks.shape == (2, 64, 64)
    images, labels, masks = next(iter(torch.utils.data.DataLoader(scenes, batch_size=4)))
    assert images.shape == (4, 3, 64, 64) and labels.shape == (4, 2) and masks.shape == (4, 2, 64, 64)
    assert torch.equal(images, scenes.images[:4])


def test_other_sizes_scale_the_objects():
    scenes = make_scenes(8, objects=2, seed=1, size=96)
    assert scenes.images.shape == (8, 3, 96, 96)
    assert torch.equal(_channel_spread(scenes.images) > 0.3, scenes.masks.any(dim=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, r"n must be an int >= 1, got 0"),
        ({"n": 2.5}, r"n must be an int >= 1"),
        ({"n": 2, "objects": 4}, r"objects must be an int in \[1, 3\], got 4"),
        ({"n": 2, "objects": True}, r"objects must be an int in \[1, 3\], got True"),
        ({"n": 2, "seed": -1}, r"seed must be an int >= 0"),
        ({"n": 2, "size": 16}, r"size must be an int >= 32"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs, message):
    with pytest.raises(hfrel.InputError, match=message):
        make_scenes(**kwargs)


def test_dataset_checks_its_tensors():
    with pytest.raises(hfrel.InputError, match=r"masks must be \(N, K, H, W\)"):
        SceneDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 2, 8, 8))


# folder export --------------------------------------------------------------------------------


def test_export_writes_the_evaluation_folder_format(tmp_path):
    scenes = make_scenes(3, objects=2, seed=5)
    out = export_folder(scenes, tmp_path / "scenes")
    with open(out / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == [f"scene_{i:04d}_{k}.png" for i in range(3) for k in "ab"]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(row["image"] for row in rows)
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(row["image"] for row in rows)
    for row in rows:
        i, k = int(row["image"][6:10]), "ab".index(row["image"][11])
        assert row["label"] == CLASS_NAMES[scenes.labels[i, k]]
        image = np.asarray(Image.open(out / "images" / row["image"]))
        assert np.array_equal(image, scenes.uint8()[i])  # lossless
        mask = np.asarray(Image.open(out / "masks" / row["image"]))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask > 0, scenes.masks[i, k].numpy())
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the partial folder was moved in place


def test_export_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "labels.csv").write_text("old")
    with pytest.raises(hfrel.InputError, match=r"already exists and is not an empty folder"):
        export_folder(make_scenes(1, seed=0), tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["labels.csv"]
    export_folder(make_scenes(1, seed=0), tmp_path / "empty_is_fine")
    (tmp_path / "empty").mkdir()
    assert (export_folder(make_scenes(1, seed=0), tmp_path / "empty") / "labels.csv").is_file()


# scores used by the demo and the measurement --------------------------------------------------


def test_heat_on_objects_and_pointing():
    masks = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    masks[0, 0, :2, :2] = True  # object 0: top-left
    masks[0, 1, 2:, 2:] = True  # object 1: bottom-right
    heat = torch.zeros(1, 2, 4, 4)
    heat[0, 0, 0, 0] = 1.0  # map of class 0: a peak on object 0
    heat[0, 1, :2, :2] = 0.5  # map of class 1: flat on object 0, a peak on object 1
    heat[0, 1, 3, 3] = 1.0
    assert torch.allclose(heat_on_objects(heat, masks), torch.tensor([[[0.25, 0.0], [0.5, 0.25]]]))
    assert pointing_hits(heat, masks).tolist() == [[True, True]]
    own, other = own_and_other_heat(heat, masks)  # class 1's map is hotter on object 0 than on its own
    assert own.tolist() == [[0.25, 0.25]] and other.tolist() == [[0.0, 0.5]]


# the bundled model ----------------------------------------------------------------------------


def test_bundled_model_files():
    path = demo_model_path()
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert (path / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    config = json.loads((path / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(CLASS_NAMES)}
    assert config["image_size"] == IMAGE_SIZE


def test_bundled_model_loads_with_from_pretrained_and_is_accurate():
    from transformers import AutoImageProcessor, ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(demo_model_path()).eval()
    processor = AutoImageProcessor.from_pretrained(demo_model_path())
    scenes = make_scenes(100, seed=EVALUATION_SEED)  # held out: the model was trained on TRAINING_SEED
    pixel_values = processor([Image.fromarray(a) for a in scenes.uint8()], return_tensors="pt").pixel_values
    assert torch.allclose(pixel_values, (scenes.images - 0.5) / 0.5, atol=1e-6)  # what training fed the model
    with torch.no_grad():
        predicted = model(pixel_values).logits.argmax(-1)
    accuracy = (predicted == scenes.labels[:, 0]).float().mean().item()
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.0%}"


def test_load_demo_model_returns_an_eval_model_and_its_processor():
    model, processor = load_demo_model()
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert model.config.id2label[0] == CLASS_NAMES[0]
    assert processor.size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}


def test_export_rejects_a_prefix_that_would_break_file_names(tmp_path):
    with pytest.raises(hfrel.InputError, match=r"prefix must be letters, digits"):
        export_folder(make_scenes(1, seed=0), tmp_path / "out", prefix="a,b")
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    original = Image.Image.save

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_folder(make_scenes(2, seed=0), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
