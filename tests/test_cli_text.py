"""`hfrel explain --text`: image–text checkpoints (tiny CLIP and SigLIP with an offline word-level tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel import viz
from hfrel.cli import main
from tests import tiny
from tests.pictures import smooth_image

PROMPTS = ["a photo of a cat", "a red disk", "a dog"]
METHODS = ["transformer_attribution", "generic_attention"]


def _save(name: str, folder: Path) -> Path:
    tiny.build(name).save_pretrained(folder)
    tiny.image_text_processor(name).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return {name: _save(name, tmp_path_factory.mktemp(name)) for name in ("clip-model", "siglip-model")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(smooth_image(48, 64, 0)).save(folder / "one.png")
    Image.fromarray(smooth_image(40, 40, 1)).save(folder / "two.png")
    return folder


def _parity(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (the batch of two and one image alone differ by rounding)."""
    scale = float(want.abs().max())
    return float((got - want).abs().max()) / (scale if scale > 0 else 1.0)


def _text_options() -> list[str]:
    return [option for prompt in PROMPTS for option in ("--text", prompt)]


@pytest.mark.parametrize("name", ["clip-model", "siglip-model"])
def test_prompts_ranked_overlays_panel_and_text_figures(name, checkpoints, photos, tmp_path, capsys):
    out = tmp_path / "out"
    methods = [option for method in METHODS for option in ("--method", method)]
    code = main(
        ["explain", str(photos), "--model", str(checkpoints[name]), *_text_options(), *methods, "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == PROMPTS
    assert summary["probabilities"] == ("sigmoid" if name == "siglip-model" else "softmax")
    assert summary["explained"] == 2

    model = tf.AutoModel.from_pretrained(checkpoints[name]).eval()
    processor = tf.AutoProcessor.from_pretrained(checkpoints[name])
    for record in summary["images"]:
        photo = Image.open(photos / f"{record['name']}.png").convert("RGB")
        padding = {"padding": "max_length", "max_length": 16} if name == "siglip-model" else {"padding": True}
        inputs = processor(text=PROMPTS, images=[photo], return_tensors="pt", **padding)
        with torch.no_grad():
            logits = model(**inputs).logits_per_image[0]
        expected = logits.softmax(-1) if name == "clip-model" else logits.sigmoid()
        ranked = [p["index"] for p in record["predictions"]]
        assert ranked == expected.argsort(descending=True).tolist()
        for p in record["predictions"]:
            assert p["label"] == PROMPTS[p["index"]]
            assert p["probability"] == pytest.approx(float(expected[p["index"]]), rel=1e-5, abs=1e-6)
            assert f"{p['label']} ({p['index']})" in printed
        with hfrel.attach(model) as explainer:
            maps = explainer.explain(**inputs, label=[[0, 1, 2]], method=METHODS)
        assert [p["text"] for p in record["prompts"]] == PROMPTS
        for k, prompt in enumerate(record["prompts"]):
            real = inputs["attention_mask"][k].bool()
            ids = inputs["input_ids"][k][real]
            assert prompt["tokens"] == processor.tokenizer.convert_ids_to_tokens(ids.tolist())
            for method in METHODS:
                want = maps[method].text_relevance[0, k][real]
                assert _parity(torch.tensor(prompt["token_relevance"][method]), want) < 1e-4
        stored = np.load(out / record["name"] / "maps.npz")
        for method in METHODS:
            assert _parity(torch.from_numpy(stored[f"relevance_{method}"]), maps[method].relevance[0]) < 1e-4
            assert (out / record["name"] / f"text-{method}.png").is_file()
        overlays = {(o["label"], o["method"]) for o in record["files"]["overlays"]}
        assert overlays == {(k, m) for k in range(3) for m in METHODS}
        assert all((out / o["file"]).is_file() for o in record["files"]["overlays"])
        assert (out / record["files"]["panel"]).is_file()


def test_text_with_a_classifier_is_bad_input(tmp_path, photos, capsys):
    folder = tmp_path / "classifier"
    tiny.build("vit").save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    code = main(["explain", str(photos), "--model", str(folder), "--text", "a cat", "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert "--text" in error and "image–text model" in error
    assert not (tmp_path / "o").exists()


def test_an_image_text_model_without_text_is_bad_input(tmp_path, checkpoints, photos, capsys):
    code = main(["explain", str(photos), "--model", str(checkpoints["clip-model"]), "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert "--text" in error and "CLIPModel" in error
    assert not (tmp_path / "o").exists()


def test_text_figure_shades_tokens_by_relevance():
    figure = viz.text_figure(
        [["<s>", "a", "cat", "</s>"], ["a", "dog"]], [[0.0, 1.0, 3.0, 0.0], torch.tensor([0.0, 0.0])], ["cat", "dog"]
    )
    texts = {t.get_text(): t for t in figure.texts}
    assert {"cat", "dog", "<s>", "a", "</s>"} <= set(texts)
    shade = texts["cat"].get_bbox_patch().get_facecolor()
    assert shade != texts["<s>"].get_bbox_patch().get_facecolor()
    with pytest.raises(hfrel.InputError, match="relevance of shape"):
        viz.text_figure([["a", "b"]], [[1.0]])
