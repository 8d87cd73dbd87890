"""`hfrel app` with image–text models (CLIP, SigLIP): a prompts box instead of the class picker, and
every prompt explained, each equal to hfrel's own map for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import hfrel
from hfrel._errors import InputError
from hfrel._images import load_image
from tests import browser, tiny
from tests.pictures import smooth_image

PROMPTS = ["a photo of a cat", "a red disk"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "photo.png"
    Image.fromarray(smooth_image(40, 48, 0)).save(path)
    return path


@pytest.mark.parametrize("name", ["clip-model", "siglip-model"])
def test_every_prompt_is_explained_as_hfrel_explains_it(name, photo):
    from hfrel._app import Explorer

    model, processor = tiny.build(name), tiny.image_text_processor(name)
    explorer = Explorer(model, processor, model_text=name)
    try:
        assert explorer.prompted
        # blank lines and repeats are dropped; the order is kept
        answer = explorer.explain(photo, "a photo of a cat\n\n a red disk \na photo of a cat", ["rollout", "lrp"])
        with np.load(answer.maps) as stored:
            maps = dict(stored)
        with pytest.raises(InputError, match="no prompt"):
            explorer.explain(photo, " \n ")
    finally:
        explorer.close()
    padding: dict = {"padding": True}
    if name.startswith("siglip"):  # SigLIP was trained on prompts padded to the text tower's full length
        padding = {"padding": "max_length", "max_length": model.config.text_config.max_position_embeddings}
    inputs = processor(text=PROMPTS, images=[load_image(photo)], return_tensors="pt", truncation=True, **padding)
    with hfrel.attach(model) as explainer:
        expected = explainer.explain(**inputs, label=torch.tensor([[0, 1]]), method=["rollout", "lrp"])
    assert maps["labels"].tolist() == [0, 1]
    for method, exp in expected.items():
        np.testing.assert_allclose(maps[f"heatmap_{method}"], exp.heatmap[0].numpy(), rtol=1e-5, atol=1e-6)
    logits = expected["rollout"].logits[0].float()
    probabilities = logits.sigmoid() if name.startswith("siglip") else logits.softmax(-1)
    assert answer.top == pytest.approx(dict(zip(PROMPTS, probabilities.tolist(), strict=True)))
    assert [caption.split(" · ")[0] for _, caption in answer.overlays] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    assert answer.message.startswith("Explained each prompt: a photo of a cat, a red disk")


def test_the_page_asks_for_prompts():
    browser.require_module("gradio", "app")
    from hfrel._app import Explorer, build_app

    explorer = Explorer(tiny.build("clip-model"), tiny.image_text_processor("clip-model"), model_text="clip")
    try:
        app = build_app(explorer)
        ids = {getattr(block, "elem_id", None) for block in app.blocks.values()}
        assert "hfrel-prompts" in ids and "hfrel-classes" not in ids
    finally:
        explorer.close()
