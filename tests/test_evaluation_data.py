"""Reading evaluation data: the folder layout with per-item problems, masks, and gtsegs_ijcv.mat (HDF5)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from hfrel import InputError
from hfrel.evaluation import FolderDataset, ImagenetSegmentation, open_dataset, read_mask


def add_item(
    root: Path,
    name: str,
    *,
    box: tuple[int, int, int, int] | None = (4, 20, 6, 30),
    size: tuple[int, int] = (40, 48),
    suffix: str = ".png",
    mask_size: tuple[int, int] | None = None,
    mask: bool = True,
    seed: int = 0,
) -> None:
    """images/<name><suffix> (random pixels) and masks/<name>.png (255 inside `box` = rows r0:r1, cols c0:c1)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "images" / f"{name}{suffix}")
    if mask:
        truth = np.zeros(mask_size or size, dtype=np.uint8)
        if box is not None:
            truth[box[0] : box[1], box[2] : box[3]] = 255
        Image.fromarray(truth).save(root / "masks" / f"{name}.png")


def write_labels(root: Path, rows: list[str]) -> None:
    (root / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")


def test_folder_items_and_what_is_skipped(tmp_path):
    root = tmp_path / "data"
    add_item(root, "a", box=(2, 10, 3, 12))
    add_item(root, "b", suffix=".jpg", seed=1)
    add_item(root, "a_second_object", box=(20, 30, 30, 40))  # the same picture as "a", another object
    add_item(root, "nomask", mask=False)
    add_item(root, "wrongsize", mask_size=(10, 10))
    add_item(root, "emptymask", box=None)
    add_item(root, "broken")
    (root / "images" / "broken.png").write_bytes(b"not a png at all")
    add_item(root, "extra")
    write_labels(
        root,
        [
            "a,1",
            "b.jpg,square",
            "a_second_object,2",
            "nomask,0",
            "",
            "wrongsize,0",
            "emptymask,0",
            "broken,0",
            "a,3",
            "ghost,1",
            "lonely",
        ],
    )
    data = FolderDataset(root)
    skipped = {s.item: s.reason for s in data.skipped}
    assert skipped == {
        "nomask": "missing mask: no file masks/nomask.png",
        "a": "listed twice in labels.csv (lines 2 and 10)",
        "ghost": "missing image: no file images/ghost.png or .jpg",
        "labels.csv line 12": "expected two fields `image,label`, got 'lonely'",
        "extra": "images/extra.png is not listed in labels.csv",
    }
    assert [data.name(i) for i in range(len(data))] == [
        "a",
        "b",
        "a_second_object",
        "wrongsize",
        "emptymask",
        "broken",
    ]
    first = data.load(0)
    assert first.label == "1" and first.image.size == (48, 40)
    expected = np.zeros((40, 48), dtype=bool)
    expected[2:10, 3:12] = True
    assert np.array_equal(first.mask, expected)
    second = data.load(1)
    assert second.label == "square" and second.image.mode == "RGB"
    assert data.load(2).mask[20:30, 30:40].all() and data.load(2).mask.sum() == 100
    with pytest.raises(InputError, match=r"wrongsize: the mask is 10x10 pixels but the image is 48x40"):
        data.load(3)
    with pytest.raises(InputError, match="emptymask: the mask has no object pixel"):
        data.load(4)
    with pytest.raises(InputError, match=r"broken\.png is not an image file"):
        data.load(5)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "labels.csv").unlink(), "no labels.csv in"),
        (
            lambda root: (root / "labels.csv").write_text("file,class\na,1\n"),
            "must start with the header `image,label`",
        ),
        (lambda root: (root / "labels.csv").write_text("image,label\n"), "lists no image"),
        (lambda root: [p.unlink() for p in (root / "images").iterdir()], "holds no image file"),
        (lambda root: shutil.rmtree(root / "masks"), "no masks/ folder"),
    ],
)
def test_unusable_folders_are_input_errors(tmp_path, damage, message):
    root = tmp_path / "data"
    add_item(root, "a")
    write_labels(root, ["a,1"])
    damage(root)
    with pytest.raises(InputError, match=message):
        FolderDataset(root)


def test_open_dataset_rejects_what_is_not_data(tmp_path):
    with pytest.raises(InputError, match="no dataset folder at"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="is a file"):
        open_dataset(tmp_path / "notes.txt")


def test_masks_nonzero_is_object_palette_index_and_alpha_ignored(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 is white, index 1 black
    palette.putdata([0, 1, 1])
    palette.save(tmp_path / "palette.png")
    assert read_mask(tmp_path / "palette.png").tolist() == [[False, True, True]]
    rgba = np.array([[[0, 0, 0, 255], [255, 0, 0, 0], [0, 0, 9, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert read_mask(tmp_path / "rgba.png").tolist() == [[False, True, True]]
    with pytest.raises(InputError, match="no mask file"):
        read_mask(tmp_path / "missing.png")


def write_gtsegs(path: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """A tiny file in the layout of gtsegs_ijcv.mat (MATLAB v7.3): value/img and value/gt are (N, 1) arrays
    of object references; images are stored transposed (3, W, H); each gt entry is a 1 x 1 cell (an array of
    one reference) leading to the mask, stored transposed (W, H). A 512-byte user block holds MATLAB's header."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        store = handle.create_group("#refs#")
        image_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        mask_refs = np.empty((len(masks), 1), dtype=h5py.ref_dtype)
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            image_refs[i, 0] = store.create_dataset(f"img{i}", data=image.transpose(2, 1, 0)).ref
            stored = store.create_dataset(f"gt{i}", data=mask.T)
            cell = np.array([[stored.ref]], dtype=h5py.ref_dtype)
            mask_refs[i, 0] = store.create_dataset(f"cell{i}", data=cell).ref
        value = handle.create_group("value")
        value.create_dataset("img", data=image_refs)
        value.create_dataset("gt", data=mask_refs)
    with path.open("r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def gtsegs_content(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two non-square images (5 x 7, 6 x 4) with masks, so a transposition mistake cannot pass."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)]
    masks = [np.zeros((5, 7), dtype=np.uint8), np.zeros((6, 4), dtype=np.uint8)]
    masks[0][1:3, 2:6] = 1
    masks[1][4:, :1] = 1
    return images, masks


def test_gtsegs_layout_is_read_with_its_transposes(tmp_path):
    images, masks = gtsegs_content()
    path = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs(path, images, masks)
    with open_dataset(path) as data:
        assert isinstance(data, ImagenetSegmentation) and not data.labelled
        assert len(data) == 2 and data.name(1) == "0001"
        for i in range(2):
            sample = data.load(i)
            assert np.array_equal(np.asarray(sample.image), images[i])
            assert np.array_equal(sample.mask, masks[i] != 0)
            assert sample.label is None


def test_gtsegs_bad_items_and_files(tmp_path, monkeypatch):
    images, masks = gtsegs_content()
    masks[1] = np.ones((4, 4), dtype=np.uint8)  # the wrong size for its 6 x 4 image
    path = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs(path, images, masks)
    with ImagenetSegmentation(path) as data:
        data.load(0)
        with pytest.raises(InputError, match="0001: the mask is 4x4 pixels but the image is 4x6"):
            data.load(1)
    (tmp_path / "fake.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(InputError, match="is not an HDF5 file"):
        ImagenetSegmentation(tmp_path / "fake.mat")
    with h5py.File(tmp_path / "other.mat", "w") as handle:
        handle.create_dataset("x", data=[1])
    with pytest.raises(InputError, match=r"does not have the layout of gtsegs_ijcv\.mat"):
        ImagenetSegmentation(tmp_path / "other.mat")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(InputError, match=r"needs h5py.*pip install 'hfrel\[imagenet-seg\]'"):
        ImagenetSegmentation(path)


def test_built_in_scenes_are_items_with_exact_masks():
    from hfrel.datasets import CLASS_NAMES, make_scenes
    from hfrel.datasets._demo_model import PROTOCOL_SEED
    from hfrel.evaluation import SceneData, open_dataset

    single = open_dataset("shapes", count=3)
    assert isinstance(single, SceneData) and len(single) == 3 and single.labelled
    pairs = open_dataset("shapes-pairs", count=4)
    assert len(pairs) == 4 and [pairs.name(i) for i in range(4)] == [
        "scene_0000_a",
        "scene_0000_b",
        "scene_0001_a",
        "scene_0001_b",
    ]
    scenes = make_scenes(2, objects=2, seed=PROTOCOL_SEED)
    sample = pairs.load(3)
    assert sample.label == CLASS_NAMES[int(scenes.labels[1, 1])]
    assert np.array_equal(sample.mask, scenes.masks[1, 1].numpy())
    expected = (scenes.images[1].permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.array_equal(np.asarray(sample.image), expected)
