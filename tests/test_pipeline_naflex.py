"""NaFlex models (Siglip2) through the pipeline: `hfrel explain` (classes and --text prompts), `explain_images`,
the app's Explorer, and `hfrel evaluate`'s clear refusal.

Each image keeps its own patch grid (its aspect ratio): the files hold each image's map at its own size, equal
to a direct `explain` call on the same processor outputs, and a batch of mixed aspect ratios equals each
image alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel._images import image_inputs, model_views, to_original
from hfrel.cli import main
from tests import tiny
from tests.pictures import smooth_image

PATCH, MAX_PATCHES = 8, 16
PHOTOS = {"wide": (30, 90), "square": (40, 40), "landscape": (48, 64)}  # (height, width): grids 2x6, 4x4, 3x4
PROMPTS = ["a photo of a cat", "a red disk", "a dog"]
TEXT_LENGTH = 16  # the tiny text tower's max_position_embeddings: SigLIP pads prompts to it


def _parity(got: torch.Tensor | np.ndarray, want: torch.Tensor) -> float:
    """max |got - want| / max |want|."""
    got = torch.as_tensor(np.asarray(got)).double()
    want = want.double()
    scale = float(want.abs().max())
    return float((got - want).abs().max()) / (scale if scale > 0 else 1.0)


def _image_processor() -> tf.Siglip2ImageProcessorPil:
    return tf.Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=MAX_PATCHES)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("naflex-photos")
    for seed, (name, (height, width)) in enumerate(PHOTOS.items()):
        Image.fromarray(smooth_image(height, width, seed)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("siglip2")
    tiny.build("siglip2").save_pretrained(folder)
    _image_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_text(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("siglip2-model")
    tiny.build("siglip2-model").save_pretrained(folder)
    tf.Siglip2Processor(image_processor=_image_processor(), tokenizer=tiny.tokenizer()).save_pretrained(folder)
    return folder


def _load(folder: Path, name: str) -> Image.Image:
    return Image.open(folder / f"{name}.png").convert("RGB")


def _check_pictures(out: Path, record: dict, photo: Image.Image, grid: tuple[int, int], methods: list[str]) -> None:
    """Every file of one image drawn at the image's own size: the view, each overlay, the mapped-back maps."""
    rows, cols = grid
    assert record["model_input"] == {"width": cols * PATCH, "height": rows * PATCH}
    stored = np.load(out / record["files"]["maps"])
    assert stored["image"].shape == (rows * PATCH, cols * PATCH, 3)
    for method in methods:
        assert stored[f"original_{method}"].shape[1:] == (photo.height, photo.width)
        assert np.isfinite(stored[f"original_{method}"]).all()  # the whole photo was resized: nothing cropped
    for overlay in record["files"]["overlays"]:
        with Image.open(out / overlay["file"]) as picture:
            assert picture.size == (cols * PATCH, rows * PATCH)
        with Image.open(out / overlay["original"]) as picture:
            assert picture.size == photo.size
    assert (out / record["files"]["panel"]).is_file()


def test_classifier_through_the_command_every_method(classifier, photos, tmp_path, capsys):
    """Three aspect ratios in one batch; every method; each image's files at its own grid, equal to explain()."""
    out = tmp_path / "out"
    methods = hfrel.methods()
    options = [o for m in methods for o in ("--method", m)]
    options += ["--label", "0", "--label", "2", "--batch-size", "3", "--original-size"]
    code = main(["explain", str(photos), "--model", str(classifier), *options, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["explained"] == 3 and not summary["failed"]
    assert (out / "index.html").is_file() and "wide" in (out / "index.html").read_text()

    model = tf.AutoModelForImageClassification.from_pretrained(classifier).eval()
    processor = tf.AutoImageProcessor.from_pretrained(classifier)
    names = [record["name"] for record in summary["images"]]
    pictures = [_load(photos, name) for name in names]
    inputs = processor(images=pictures, return_tensors="pt")  # the batch the command made, in its order
    label = torch.tensor([[0, 2]] * len(names))
    with hfrel.attach(model) as explainer:
        batch = explainer.explain(**inputs, label=label, method=methods)
        alone = [
            explainer.explain(**processor(images=[p], return_tensors="pt"), label=label[:1], method=methods)
            for p in pictures
        ]
    probabilities = batch[methods[0]].probabilities
    for b, record in enumerate(summary["images"]):
        grid = tuple(inputs["spatial_shapes"][b].tolist())
        assert grid == tuple(alone[b][methods[0]].sizes[0].tolist())
        stored = np.load(out / record["files"]["maps"])
        assert stored["labels"].tolist() == [0, 2]
        for method in methods:
            relevance, heatmap = batch[method].image(b)
            assert stored[f"relevance_{method}"].shape == tuple(relevance.shape)  # (2, rows, cols): no padding
            assert _parity(stored[f"relevance_{method}"], relevance) < 1e-5, method
            assert _parity(stored[f"heatmap_{method}"], heatmap) < 1e-5, method
            own_relevance, own_heatmap = alone[b][method].image(0)  # the image by itself: the same map
            assert _parity(stored[f"relevance_{method}"], own_relevance) < 1e-4, method
            assert _parity(stored[f"heatmap_{method}"], own_heatmap) < 1e-4, method
        ranked = [p["index"] for p in record["predictions"]]
        assert ranked == probabilities[b].argsort(descending=True).tolist()
        _check_pictures(out, record, pictures[b], grid, methods)  # type: ignore[arg-type]


def test_explain_images_on_examples_explains_the_predicted_class(classifier, photos, tmp_path):
    model = tf.AutoModelForImageClassification.from_pretrained(classifier).eval()
    processor = tf.AutoImageProcessor.from_pretrained(classifier)
    pictures = [_load(photos, name) for name in PHOTOS]
    summary = hfrel.explain_images(
        model, processor, [{"image": p} for p in pictures], tmp_path / "out", method=["rollout", "lrp"], batch_size=2
    )
    assert summary["explained"] == 3
    with hfrel.attach(model) as explainer:
        expected = explainer.explain(**processor(images=pictures, return_tensors="pt"), method=["rollout", "lrp"])
    for b, record in enumerate(summary["images"]):
        assert [e["index"] for e in record["explained"]] == [int(expected["rollout"].labels[b])]
        stored = np.load(tmp_path / "out" / record["files"]["maps"])
        for method, exp in expected.items():
            relevance, heatmap = exp.image(b)
            assert _parity(stored[f"relevance_{method}"][0], relevance) < 1e-4, method
            assert _parity(stored[f"heatmap_{method}"][0], heatmap) < 1e-4, method


def test_image_text_model_with_prompts_through_the_command(image_text, photos, tmp_path, capsys):
    out = tmp_path / "out"
    methods = ["transformer_attribution", "lrp"]
    options = [o for p in PROMPTS for o in ("--text", p)] + [o for m in methods for o in ("--method", m)]
    code = main(["explain", str(photos), "--model", str(image_text), *options, "--original-size", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["explained"] == 3 and summary["prompts"] == PROMPTS and summary["probabilities"] == "sigmoid"

    model = tf.AutoModel.from_pretrained(image_text).eval()
    processor = tf.AutoProcessor.from_pretrained(image_text)
    names = [record["name"] for record in summary["images"]]
    pictures = [_load(photos, name) for name in names]
    inputs = processor(
        text=PROMPTS,
        images=pictures,
        return_tensors="pt",
        padding="max_length",
        max_length=TEXT_LENGTH,
        truncation=True,
        patch_size=PATCH,  # the checkpoint's image processor settings (Siglip2Processor's call defaults to 16, 256)
        max_num_patches=MAX_PATCHES,
    )
    with hfrel.attach(model) as explainer:
        maps = explainer.explain(**inputs, label=[[0, 1, 2]] * len(names), method=methods)
    logits = maps[methods[0]].logits
    for b, record in enumerate(summary["images"]):
        grid = tuple(inputs["spatial_shapes"][b].tolist())
        stored = np.load(out / record["files"]["maps"])
        for method in methods:
            relevance, heatmap = maps[method].image(b)
            assert _parity(stored[f"relevance_{method}"], relevance) < 1e-5, method
            assert _parity(stored[f"heatmap_{method}"], heatmap) < 1e-5, method
            for k, prompt in enumerate(record["prompts"]):
                real = inputs["attention_mask"][k].bool()
                want = maps[method].text_relevance[b, k][real]
                assert _parity(torch.tensor(prompt["token_relevance"][method]), want) < 1e-5
        for p in record["predictions"]:
            assert p["probability"] == pytest.approx(float(logits[b, p["index"]].sigmoid()), rel=1e-5, abs=1e-6)
        _check_pictures(out, record, pictures[b], grid, methods)  # type: ignore[arg-type]


def test_a_processor_that_does_not_fit_the_model_is_bad_input(classifier, photos, tmp_path, capsys):
    folder = tmp_path / "mismatched"
    tiny.build("siglip2").save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    code = main(["explain", str(photos), "--model", str(folder), "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert "NaFlex" in error and "ViTImageProcessor" in error and "spatial_shapes" in error
    assert not (tmp_path / "o").exists()

    model = tiny.build("vit")  # a grid model with a NaFlex processor
    with pytest.raises(hfrel.InputError, match="NaFlex patches"):
        hfrel.explain_images(model, _image_processor(), [photos / "wide.png"], tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_views_and_mapping_back_follow_each_images_own_grid(photos):
    """The view is the processor's resized image (patches put back), and maps go back onto the whole photo."""
    processor = _image_processor()
    pictures = [_load(photos, name) for name in PHOTOS]
    inputs = processor(images=pictures, return_tensors="pt")
    views = model_views(inputs, processor)
    for b, view in enumerate(views):
        rows, cols = inputs["spatial_shapes"][b].tolist()
        assert view.shape == (3, rows * PATCH, cols * PATCH)
        again = processor(images=[(view.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)], return_tensors="pt")
        torch.testing.assert_close(again["pixel_values"][0], inputs["pixel_values"][b], atol=1e-5, rtol=0)
        # a map that is the column index, mapped back, reads each photo column at its resized centre
        ramp = torch.arange(cols * PATCH, dtype=torch.float32).expand(rows * PATCH, -1)
        back = to_original(ramp, pictures[b], processor)
        width = pictures[b].width
        expected = ((np.arange(width) + 0.5) * (cols * PATCH / width) - 0.5).clip(0, cols * PATCH - 1)
        np.testing.assert_allclose(back[0], expected, atol=1e-4)
    with pytest.raises(hfrel.InputError, match=r"Explanation\.image"):
        to_original(torch.zeros(4 * PATCH, 6 * PATCH), pictures[0], processor)  # a padded map, not the image's own
    with pytest.raises(hfrel.InputError, match=r"\(B, C, H, W\)"):
        hfrel.viz.model_view(inputs["pixel_values"], processor)
    assert set(image_inputs(inputs, "naflex")) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}


def test_app_explorer_explains_naflex_models(classifier, image_text, photos):
    from hfrel._app import Explorer

    photo = photos / "wide.png"
    cases = [
        (tf.AutoModelForImageClassification.from_pretrained(classifier), tf.AutoImageProcessor, classifier, "1, 3"),
        (tf.AutoModel.from_pretrained(image_text), tf.AutoProcessor, image_text, "\n".join(PROMPTS[:2])),
    ]
    for model, loader, folder, asked in cases:
        processor = loader.from_pretrained(folder)
        explorer = Explorer(model.eval(), processor, model_text=folder.name)
        try:
            answer = explorer.explain(photo, asked, ["transformer_attribution", "attention"])
            with np.load(answer.maps) as stored:
                maps = dict(stored)
        finally:
            explorer.close()
        inputs = dict(processor(images=[_load(photos, "wide")], return_tensors="pt"))
        label = torch.tensor([[1, 3]])
        if explorer.prompted:
            inputs = dict(
                processor(
                    text=PROMPTS[:2],
                    images=[_load(photos, "wide")],
                    return_tensors="pt",
                    padding="max_length",
                    max_length=TEXT_LENGTH,
                    truncation=True,
                    patch_size=PATCH,
                    max_num_patches=MAX_PATCHES,
                )
            )
            label = torch.tensor([[0, 1]])
        rows, cols = inputs["spatial_shapes"][0].tolist()
        with hfrel.attach(model) as explainer:
            expected = explainer.explain(**inputs, label=label, method=["transformer_attribution", "attention"])
        assert maps["image"].shape == (rows * PATCH, cols * PATCH, 3)
        assert all(picture.size == (cols * PATCH, rows * PATCH) for picture, _ in answer.overlays)
        for method, exp in expected.items():
            relevance, heatmap = exp.image(0)
            assert _parity(maps[f"relevance_{method}"], relevance) < 1e-5, method
            assert _parity(maps[f"heatmap_{method}"], heatmap) < 1e-5, method


def test_evaluate_refuses_naflex_models_clearly(classifier, tmp_path, capsys):
    from hfrel.evaluation import FolderDataset
    from tests.test_evaluation_data import add_item, write_labels

    root = tmp_path / "data"
    add_item(root, "one", box=(2, 20, 4, 30))
    write_labels(root, ["one,1"])
    model = tiny.build("siglip2")
    with pytest.raises(hfrel.UnsupportedModelError, match="NaFlex"):
        hfrel.evaluation.evaluate(model, _image_processor(), FolderDataset(root), progress=False)
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(classifier), "--data", str(root), "--quiet", "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err
    assert "NaFlex" in error and "hfrel explain" in error
    assert not out.exists()
