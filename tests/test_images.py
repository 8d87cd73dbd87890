"""Images from disk (EXIF, modes, bad files), finding inputs, and mapping maps between the model's
input and the original photo through the image processors' real geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel._images import _crop_shift, find_images, load_image, model_view, output_names, to_original

RNG = np.random.default_rng(0)


def _rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


# load_image ----------------------------------------------------------------------------------------

ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # stored image must turn 90 degrees clockwise to stand upright
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = _rgb(20, 36)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"  # lossless, so the check is exact
    Image.fromarray(stored).save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded), ORIENTATIONS[orientation](stored))


def test_grayscale_and_bilevel_become_rgb(tmp_path):
    gray = RNG.integers(0, 256, (12, 9), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    loaded = np.asarray(load_image(tmp_path / "gray.png"))
    assert loaded.shape == (12, 9, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], gray)
    Image.fromarray(gray > 127).save(tmp_path / "bits.png")
    bits = np.asarray(load_image(tmp_path / "bits.png"))
    np.testing.assert_array_equal(bits[..., 0], np.where(gray > 127, 255, 0))


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red everywhere, alpha 0, 255 and 128 by row
    rgba[0, :, 3], rgba[1, :, 3], rgba[2:, :, 3] = 0, 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = np.asarray(load_image(tmp_path / "rgba.png")).astype(int)
    assert (loaded[0] == 255).all()  # fully transparent: white
    assert (loaded[1] == [200, 0, 0]).all()  # opaque: the colour
    np.testing.assert_allclose(loaded[2], [[228, 127, 127]] * 3, atol=1)  # half: halfway to white

    gray_alpha = Image.fromarray(
        np.stack([np.full((2, 2), 50, np.uint8), np.array([[0, 255], [255, 0]], np.uint8)], -1)
    )
    gray_alpha.save(tmp_path / "la.png")
    loaded = np.asarray(load_image(tmp_path / "la.png"))
    assert (loaded[0, 0] == 255).all() and (loaded[0, 1] == 50).all()


def test_palette_images_with_and_without_transparency(tmp_path):
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    palette.save(tmp_path / "plain.gif")
    loaded = np.asarray(load_image(tmp_path / "plain.gif"))
    assert (loaded[0, 0] == [255, 0, 0]).all() and (loaded[0, 1] == [0, 0, 255]).all()
    palette.save(tmp_path / "clear.png", transparency=1)  # palette entry 1 is transparent
    loaded = np.asarray(load_image(tmp_path / "clear.png"))
    assert (loaded[0, 0] == [255, 0, 0]).all() and (loaded[0, 1] == [255, 255, 255]).all()


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    deep = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    loaded = np.asarray(load_image(tmp_path / "deep.png"))
    np.testing.assert_array_equal(loaded[..., 0], [[0, 255], [128, 4]])
    wide = Image.fromarray(deep.astype(np.int32))  # mode "I", as older Pillows read 16-bit PNGs
    wide.save(tmp_path / "wide.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "wide.tif"))[..., 0], [[0, 255], [128, 4]])
    floats = Image.fromarray(np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32))
    floats.save(tmp_path / "float.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "float.tif"))[..., 0], [[0, 255], [128, 64]])


def test_cmyk_becomes_rgb(tmp_path):
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=100)
    loaded = np.asarray(load_image(tmp_path / "print.jpg")).astype(int)
    assert np.abs(loaded - [255, 0, 0]).max() <= 2


def test_bad_files_raise_input_errors(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(hfrel.InputError, match=r"notes.txt is not an image file Pillow can read"):
        load_image(tmp_path / "notes.txt")
    whole = tmp_path / "whole.png"
    Image.fromarray(_rgb(40, 40)).save(whole)
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(hfrel.InputError, match=r"cut.png is a corrupt or truncated image \(image file is truncated"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(hfrel.InputError, match=r"no image file at .*missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(hfrel.InputError, match=r"no image file at"):
        load_image(tmp_path)  # a folder is not an image file
    monkeypatch.setattr("PIL.ImageOps.exif_transpose", lambda image: {}["malformed EXIF"])
    with pytest.raises(hfrel.InputError, match=r"whole.png could not be read \(KeyError: 'malformed EXIF'\)"):
        load_image(whole)
    monkeypatch.undo()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(hfrel.InputError, match=r"whole.png is too large to read safely"):
        load_image(whole)


# finding inputs and naming outputs -------------------------------------------------------------------


def test_find_images_expands_folders_and_reports_problems(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("b.JPG", "a.png", "notes.txt", "c.webp"):
        (photos / name).write_bytes(b"x")
    (photos / "sub").mkdir()
    (photos / "sub" / "deep.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    odd = tmp_path / "picture.dat"
    odd.write_bytes(b"x")
    found, problems = find_images([photos, odd, tmp_path / "gone.png", tmp_path / "empty", photos / "a.png"])
    assert [p.name for p in found] == ["a.png", "b.JPG", "c.webp", "picture.dat"]  # sorted, once, not recursive
    assert [p.input for p in problems] == [str(tmp_path / "gone.png"), str(tmp_path / "empty")]
    assert problems[0].error == f"no such file or folder: {tmp_path / 'gone.png'}"
    assert problems[1].error.startswith(f"no image files in the folder {tmp_path / 'empty'} (looked for .bmp, ")


def test_output_names_are_stems_made_unique_by_path(tmp_path):
    paths = [tmp_path / "a" / "cat.jpg", tmp_path / "b" / "Cat.png", tmp_path / "dog.png", tmp_path / "summary.png"]
    names = output_names(paths, reserved=["summary"])
    assert names[2] == "dog"
    assert names[0].startswith("cat-") and names[1].startswith("Cat-") and names[3].startswith("summary-")
    assert len({n.casefold() for n in names}) == 4
    # a name depends on its path and the list, not on the order or how the list is split into batches
    assert output_names(paths[::-1], reserved=["summary"])[::-1] == names


# what the model saw, and back to the photo ---------------------------------------------------------


def test_model_view_undoes_normalisation_and_rescaling():
    photo = Image.fromarray(_rgb(32, 32))
    processors = [
        tf.ViTImageProcessorPil(size={"height": 32, "width": 32}),  # mean/std 0.5
        tf.ViTImageProcessorPil(
            size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3], image_std=[0.2, 0.3, 0.4]
        ),
        tf.ViTImageProcessorPil(size={"height": 32, "width": 32}, do_normalize=False, rescale_factor=1 / 127.5),
        tf.ViTImageProcessorPil(size={"height": 32, "width": 32}, do_normalize=False, do_rescale=False),
    ]
    for processor in processors:
        pixels = processor(images=[photo], return_tensors="pt")["pixel_values"]
        view = model_view(pixels, processor)
        assert view.shape == (1, 3, 32, 32)
        np.testing.assert_array_equal((view[0].permute(1, 2, 0).numpy() * 255).round(), np.asarray(photo))


def _ramp_photo(height: int, width: int) -> Image.Image:
    """Red = column, green = row, as fractions of the image: any misplacement changes the colour."""
    rows, cols = np.mgrid[0:height, 0:width]
    ramp = np.stack([cols / (width - 1), rows / (height - 1), np.zeros((height, width))], axis=-1)
    return Image.fromarray((ramp * 255).round().astype(np.uint8))


PROCESSORS = {
    "squash (ViT)": (tf.ViTImageProcessorPil(size={"height": 32, "width": 32}), None),
    "resize + crop (DeiT)": (
        tf.DeiTImageProcessorPil(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}),
        ((4, 39), (7, 62)),  # rows and columns of the 45x70 photo inside the crop
    ),
    "shortest edge + crop (BiT / DINOv2)": (
        tf.BitImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}),
        ((2, 41), (15, 54)),
    ),
    "shortest edge + crop (CLIP)": (
        tf.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ((0, 44), (11, 56)),
    ),
    "crop larger than the image (padding)": (
        tf.DeiTImageProcessorPil(size={"height": 24, "width": 24}, crop_size={"height": 32, "width": 32}),
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(PROCESSORS))
def test_to_original_inverts_the_processor_geometry(case):
    """Map the model's view of a coordinate-ramp photo back: each photo pixel must read its own colour."""
    processor, crop = PROCESSORS[case]
    photo = _ramp_photo(45, 70)
    view = model_view(processor(images=[photo], return_tensors="pt")["pixel_values"], processor)[0]
    back = to_original(view[:2], photo, processor)  # red and green channels as two "maps"
    assert back.shape == (2, 45, 70)
    inside = ~np.isnan(back[0])
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    expected = ((0, 44), (0, 69)) if crop is None else crop
    assert ((rows.min(), rows.max()), (cols.min(), cols.max())) == expected
    assert inside[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # one box
    truth = np.asarray(photo, dtype=np.float32).transpose(2, 0, 1)[:2] / 255
    interior = np.zeros_like(inside)
    interior[rows.min() + 2 : rows.max() - 1, cols.min() + 2 : cols.max() - 1] = True  # away from resampling edges
    assert np.abs(back[:, interior] - truth[:, interior]).max() < 1.5 / 255


def test_to_original_moves_a_hot_quadrant_with_the_crop():
    processor, _ = PROCESSORS["resize + crop (DeiT)"]
    heat = torch.zeros(32, 32)
    heat[:16, :16] = 1.0  # top-left quadrant of the model's input
    back = to_original(heat, np.zeros((45, 70, 3)), processor)
    assert back.shape == (45, 70)
    assert np.isnan(back[:4]).all() and np.isnan(back[:, :7]).all() and np.isnan(back[40:]).all()
    # the crop spans rows 4..39 and columns 7..62 of the photo; its top-left quadrant is hot
    assert (back[5:20, 8:33] == 1).all()
    assert (back[25:39, 8:62] == 0).all() and (back[5:39, 38:62] == 0).all()


def test_to_original_refuses_what_it_cannot_map():
    class Stretchy(tf.ViTImageProcessorPil):
        def resize(self, image, size, resample=None, **kwargs):  # some other geometry
            return super().resize(image, size, resample, **kwargs)

    with pytest.raises(hfrel.InputError, match=r"through Stretchy: it overrides resize"):
        to_original(np.zeros((32, 32)), np.zeros((50, 50, 3)), Stretchy(size={"height": 32, "width": 32}))
    processor = tf.ViTImageProcessorPil(size={"height": 32, "width": 32})
    with pytest.raises(hfrel.InputError, match=r"into 32x32 .* but the model's input is 24x24"):
        to_original(np.zeros((24, 24)), np.zeros((50, 50, 3)), processor)
    with pytest.raises(hfrel.InputError, match=r"not a transformers image processor"):
        to_original(np.zeros((32, 32)), np.zeros((50, 50, 3)), object())


def test_crop_offsets_of_both_backends():
    """Inside the image both backends crop from floor((n - c) / 2); padding, they differ by one pixel."""
    assert _crop_shift(40, 32, torchvision=False) == _crop_shift(40, 32, torchvision=True) == 4
    assert _crop_shift(41, 32, torchvision=False) == _crop_shift(41, 32, torchvision=True) == 4
    assert _crop_shift(25, 32, torchvision=False) == -4  # numpy: ceil(7 / 2) padding before the image
    assert _crop_shift(25, 32, torchvision=True) == -3  # torchvision: floor(7 / 2) before
