"""`hfrel app`: the Explorer behind the page (answers equal hfrel's own maps, clear errors, the model left
as found), then the real app as a server process, driven in headless Chromium and through gradio_client."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel._errors import InputError, LabelError, MethodError
from hfrel._images import load_image
from tests import browser, tiny
from tests.pictures import smooth_image
from tests.state import snapshot

NAMES = {0: "tabby, tabby cat", 1: "dog", 2: "Cat", 3: "tabby", 4: "goldfish"}


@pytest.fixture(scope="module")
def classifier():
    model = tiny.build("vit")
    model.config.id2label = dict(NAMES)
    model.config.label2id = {name: index for index, name in NAMES.items()}
    return model, tf.ViTImageProcessorPil(size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    Image.fromarray(smooth_image(40, 48, 0)).save(folder / "photo.png")
    (folder / "bad.png").write_bytes(b"<html>not a picture</html>")
    return folder


def test_answers_are_hfrels_own_maps(classifier, pictures):
    from hfrel._app import Explorer

    model, processor = classifier
    explorer = Explorer(model, processor, model_text="tiny")
    try:
        answer = explorer.explain(pictures / "photo.png", "goldfish, 1", ["rollout", "transformer_attribution"])
        with np.load(answer.maps) as stored:
            maps = dict(stored)
    finally:
        explorer.close()
    assert not answer.maps.exists()  # closing deletes the answers' files
    pixel_values = processor(images=[load_image(pictures / "photo.png")], return_tensors="pt")["pixel_values"]
    with hfrel.attach(model) as explainer:
        expected = explainer.explain(
            pixel_values, torch.tensor([[4, 1]]), method=["rollout", "transformer_attribution"]
        )
    assert maps["labels"].tolist() == [4, 1]
    for method, exp in expected.items():
        np.testing.assert_allclose(maps[f"heatmap_{method}"], exp.heatmap[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(maps[f"relevance_{method}"], exp.relevance[0].numpy(), rtol=1e-5, atol=1e-7)
    probabilities = expected["rollout"].probabilities[0]
    top = probabilities.topk(5)
    assert list(answer.top) == [NAMES[int(i)] for i in top.indices]
    assert list(answer.top.values()) == pytest.approx(top.values.tolist())
    assert [caption.split(" · ")[0] + " " + caption.split(" · ")[2] for _, caption in answer.overlays] == [
        "goldfish rollout",
        "goldfish transformer_attribution",
        "dog rollout",
        "dog transformer_attribution",
    ]
    assert all(picture.size == (32, 32) for picture, _ in answer.overlays)
    assert answer.panel.width > 4 * answer.panel.height  # input + four maps in one row (titles above)


def test_classes_as_text_and_clear_errors(classifier, pictures):
    from hfrel._app import Explorer

    model, processor = classifier
    before = snapshot(model)
    explorer = Explorer(model, processor, model_text="tiny")
    try:
        assert explorer.parse_classes("") == []  # the predicted class
        assert explorer.parse_classes("tabby, tabby cat, 2") == [0, 2]  # a name that holds a comma, read whole
        assert explorer.parse_classes("TABBY, dog") == [3, 1]
        assert explorer.parse_classes(["4", "goldfish"]) == [4]
        with pytest.raises(LabelError, match=r"unknown class name 'gold fish'.*Close matches: 'goldfish' \(4\)"):
            explorer.explain(pictures / "photo.png", "gold fish")
        with pytest.raises(LabelError, match="out of range"):
            explorer.explain(pictures / "photo.png", "9")
        with pytest.raises(InputError, match=r"^the upload 'bad.png' is not an image file Pillow can read"):
            explorer.explain(pictures / "bad.png")
        with pytest.raises(InputError, match="no image"):
            explorer.explain(None)
        with pytest.raises(MethodError, match="at least one method"):
            explorer.explain(pictures / "photo.png", "", [])
        with pytest.raises(InputError, match="unknown colormap"):
            explorer.explain(pictures / "photo.png", cmap="jett")
        assert explorer.explain(pictures / "photo.png").overlays  # still answering after every refusal
    finally:
        explorer.close()
    after = snapshot(model)
    assert after.keys() == before.keys()
    for key in ("types", "hooks", "attn", "global_hooks"):
        assert after[key] == before[key], key


def test_missing_gradio_is_a_clear_error(monkeypatch):
    import builtins

    from hfrel._app import _gradio

    real_import = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio":
            raise ImportError("No module named 'gradio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    with pytest.raises(InputError, match=r"pip install 'hfrel\[app\]'"):
        _gradio()


def test_bad_options_exit_2_before_loading(capsys):
    browser.require_module("gradio", "app")
    from hfrel.cli import main

    assert main(["app", "--port", "0"]) == 2
    assert main(["app", "--max-file-size", "ten megabytes"]) == 2
    assert main(["app", "--model", "./no/such/folder"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "hfrel: error: --port must be in 1..65535; got 0"
    assert lines[1].startswith("hfrel: error: --max-file-size must be a size such as 10mb")
    assert lines[2] == "hfrel: error: no model folder at ./no/such/folder"


def test_the_app_in_a_browser_and_from_gradio_client(tmp_path, pictures):
    """One server for every check: a bad upload, then a good one, in the page; then /explain from the client."""
    browser.require_module("gradio", "app")
    big = tmp_path / "big.png"  # random pixels do not compress: well over the limit below
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 200_000
    server = browser.app_server("--max-file-size", "100kb", log=tmp_path / "app.log")
    with server as url, browser.browser() as driver:
        driver.get(url)
        browser.upload(driver, pictures / "bad.png")
        browser.wait_until(
            driver,
            "return document.querySelector('#hfrel-status .error');",
            60,
            "the message on the bad upload",
        )
        assert browser.status_text(driver).startswith(
            "⚠ the upload 'bad.png' is not an image file Pillow can read (unsupported format or not an image)"
        )
        browser.upload(driver, pictures / "photo.png")  # the server is still serving
        assert browser.wait_for_maps(driver) == 1  # the predicted class with the paper's method
        assert browser.status_text(driver).startswith("Explained the predicted class")
        assert "error" not in driver.execute_script("return document.querySelector('#hfrel-status').innerHTML;")
        top = driver.find_element("css selector", "#hfrel-top").text
        assert any(name in top for name in ("disk", "ring", "square", "diamond", "triangle", "cross"))

        from gradio_client import Client, handle_file

        client = Client(url, verbose=False)
        gallery, top = client.predict(
            handle_file(str(pictures / "photo.png")), "disk, 5", ["rollout", "attention"], api_name="/explain"
        )
        assert [item["caption"].split(" · ")[::2] for item in gallery] == [
            ["disk", "rollout"],
            ["disk", "attention"],
            ["cross", "rollout"],
            ["cross", "attention"],
        ]
        assert all(Image.open(item["image"]).size == (64, 64) for item in gallery)
        assert len(top["confidences"]) == 5
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError, match=r"unknown class name 'dsik'.*Close matches: 'disk' \(0\)"):
            client.predict(handle_file(str(pictures / "photo.png")), "dsik", [], api_name="/explain")
        with pytest.raises(Exception, match=r"(?i)too large|size"):  # refused by the server, before hfrel
            client.predict(handle_file(str(big)), "", [], api_name="/explain")
        assert client.predict(handle_file(str(pictures / "photo.png")), "", [], api_name="/explain")[0]
