"""index.html (hfrel explain) and report.html (hfrel evaluate): rendered from the records alone, and
checked in a real headless Chromium (tests/browser.py): every picture loads, the filter filters."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
import transformers as tf
from PIL import Image

import hfrel
from hfrel._html import INDEX_PAGE, index_page, write_index
from hfrel.evaluation import write_report
from tests import browser, tiny
from tests.pictures import smooth_image

NAMES = {0: "tabby, tabby cat", 1: "dog", 2: "<b>bold</b>", 3: "cat", 4: "goldfish"}
METHODS = ["transformer_attribution", "rollout"]


@pytest.fixture(scope="module")
def classifier():
    model = tiny.build("vit")
    model.config.id2label = dict(NAMES)
    model.config.label2id = {name: index for index, name in NAMES.items()}
    processor = tf.ViTImageProcessorPil(size={"height": 32, "width": 32})
    return model, processor


@pytest.fixture(scope="module")
def run(tmp_path_factory, classifier) -> Path:
    """A real explain run: three images (one name needing escapes), one broken file, two classes, two methods."""
    root = tmp_path_factory.mktemp("pages")
    folder = root / "photos"
    folder.mkdir()
    for index, name in enumerate(["alpha.png", "beta gamma.png", "o'neil&co.png"]):
        Image.fromarray(smooth_image(40, 48, index)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not a picture")
    model, processor = classifier
    out = root / "out"
    hfrel.explain_images(model, processor, folder, out, label=[0, 3], method=METHODS, progress="never")
    return out


def test_index_is_written_from_the_summary_and_links_every_file(run):
    page = (run / INDEX_PAGE).read_text(encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text())
    assert page == index_page(summary)  # rendered from summary.json alone
    assert write_index(run).read_text(encoding="utf-8") == page  # and rewriting gives the same bytes
    sources = re.findall(r'<img src="([^"]+)"', page)
    overlays = [o["file"] for r in summary["images"] if r["status"] == "ok" for o in r["files"]["overlays"]]
    assert len(sources) == len(overlays) == 3 * 2 * 2
    for source in sources:  # relative links to files that exist
        assert not source.startswith(("/", "http")), source
        assert (run / unquote(html.unescape(source))).is_file(), source
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page  # class names are escaped
    assert "broken.png" in page and "not an image file" in page  # the skipped file with its reason
    assert "tabby, tabby cat (0)" in page


def test_index_is_the_same_after_a_rerun(run, classifier):
    before = (run / INDEX_PAGE).read_bytes()
    model, processor = classifier
    summary = hfrel.explain_images(
        model, processor, run.parent / "photos", run, label=[0, 3], method=METHODS, progress="never"
    )
    assert summary["explained"] == 3
    assert (run / INDEX_PAGE).read_bytes() == before


def test_index_in_a_browser(run):
    with browser.browser() as driver:
        driver.get((run / INDEX_PAGE).as_uri())
        assert driver.execute_script("return document.images.length;") == 12
        assert browser.broken_images(driver) == []
        shown = "return document.getElementById('shown').textContent;"
        assert driver.execute_script(shown) == "showing 3 of 3 images"

        def visible_figures() -> list[tuple[str, str]]:
            return [
                tuple(pair)
                for pair in driver.execute_script(
                    "return Array.from(document.querySelectorAll('figure'))"
                    ".filter(function (f) { return f.offsetParent !== null; })"
                    ".map(function (f) { return [f.dataset.label, f.dataset.method]; });"
                )
            ]

        from selenium.webdriver.support.ui import Select

        Select(driver.find_element("id", "method-filter")).select_by_value("rollout")
        assert sorted(set(visible_figures())) == [("0", "rollout"), ("3", "rollout")]
        assert len(visible_figures()) == 6
        Select(driver.find_element("id", "class-filter")).select_by_value("3")
        assert visible_figures() == [("3", "rollout")] * 3
        name = driver.find_element("id", "name-filter")
        name.send_keys("beta")
        assert visible_figures() == [("3", "rollout")]
        assert driver.execute_script(shown) == "showing 1 of 3 images"
        name.clear()
        name.send_keys("x")  # input events: clear() alone sends none
        name.send_keys("\b")
        Select(driver.find_element("id", "method-filter")).select_by_value("")
        Select(driver.find_element("id", "class-filter")).select_by_value("")
        assert len(visible_figures()) == 12
        skipped = driver.find_element("css selector", ".skipped").text
        assert "broken.png" in skipped and "not an image file" in skipped


def _report() -> dict:
    """A report as hfrel.evaluation.evaluate returns it: two methods, perturbation curves, one skipped item."""
    steps = [0.0, 0.1, 0.2]
    methods = {
        name: {
            "pixel_accuracy": 70.0 + i,
            "miou": 50.0 - i,
            "map": 80.0,
            "pointing_game": 90.0,
            "relevance_mass": None,
            "rank_accuracy": 40.0,
            "positive_perturbation_auc": 20.0 + i,
            "negative_perturbation_auc": 60.0 - i,
            "positive_perturbation_accuracy": [100.0, 50.0 - i, 10.0],
            "negative_perturbation_accuracy": [100.0, 90.0, 80.0 - i],
        }
        for i, name in enumerate(["transformer_attribution", "rollout"])
    }
    return {
        "model": "tiny <model>",
        "data": "shapes",
        "n": 3,
        "label": "dataset",
        "start_layer": 0,
        "threshold": "mean",
        "unperturbed_accuracy": 100.0,
        "perturbation": "ran",
        "perturbation_steps": steps,
        "methods": methods,
        "skipped": [{"item": "nomask", "reason": "no mask file"}],
    }


def test_report_page_in_a_browser(tmp_path):
    written = write_report(_report(), tmp_path)
    assert (tmp_path / "report.html") in written
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "tiny &lt;model&gt;" in page and "<model>" not in page
    assert 'class="best">71.00<' in page  # pixel accuracy: higher is better
    assert 'class="best">20.00<' in page  # positive AUC: lower is better
    with browser.browser() as driver:
        driver.get((tmp_path / "report.html").as_uri())
        assert browser.broken_images(driver) == []
        assert driver.execute_script("return document.images.length;") == 1
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('table.scores tr')).slice(1)"
            ".map(function (r) { return r.cells[0].innerText; });"
        )
        assert rows == ["transformer_attribution", "rollout"]
        assert "no mask file" in driver.find_element("css selector", ".skipped").text


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium, no chromedriver
    monkeypatch.delenv("HFREL_CHROMIUM", raising=False)
    monkeypatch.delenv("HFREL_CHROMEDRIVER", raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must not be skipped in CI"):
        browser.start_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        browser.start_browser()
