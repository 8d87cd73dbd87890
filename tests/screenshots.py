"""The screenshots in docs/images, taken with the page tests' own browser helpers (tests/browser.py).

    python -m tests.screenshots [--out docs/images]

Explains five of the demo's held-out scenes (plus one broken file) with the bundled model into a
scratch folder and shoots its index.html; evaluates the demo model on 16 built-in scenes and shoots
report.html; starts `hfrel app`, uploads a scene, chooses both of its classes and two methods, and
shoots the answer. Needs what the page tests need: chromium, chromium-driver, selenium, gradio.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests import browser

ROOT = Path(__file__).resolve().parents[1]


def index_page(scratch: Path, out: Path) -> Path:
    import hfrel
    from hfrel._app import example_scenes
    from hfrel.datasets import load_demo_model

    photos = scratch / "scenes"
    photos.mkdir()
    example_scenes(photos, count=5)
    (photos / "notes.png").write_text("not a picture")
    model, processor = load_demo_model()
    run = scratch / "explained"
    hfrel.explain_images(
        model,
        processor,
        photos,
        run,
        method=["transformer_attribution", "rollout", "attention"],
        progress="never",
        model_name="the bundled demo model",
    )
    with browser.browser() as driver:
        driver.get((run / "index.html").as_uri())
        assert browser.broken_images(driver) == []
        return browser.screenshot(driver, out / "index-page.png", height=820)


def report_page(scratch: Path, out: Path) -> Path:
    from hfrel.datasets import load_demo_model
    from hfrel.evaluation import evaluate, open_dataset, write_report

    model, processor = load_demo_model()
    report = evaluate(
        model,
        processor,
        open_dataset("shapes", count=16),
        method=["transformer_attribution", "generic_attention", "rollout", "attention", "attention_gradcam"],
        progress=False,
    )
    report["model"] = "the bundled demo model"
    write_report(report, scratch / "report")
    with browser.browser() as driver:
        driver.get((scratch / "report" / "report.html").as_uri())
        assert browser.broken_images(driver) == []
        return browser.screenshot(driver, out / "report-page.png")


def app_page(scratch: Path, out: Path) -> Path:
    from hfrel._app import example_scenes

    scene = example_scenes(scratch, count=3)[2]  # a cross and a disk
    with browser.app_server(log=scratch / "app.log") as url, browser.browser(height=1000) as driver:
        driver.get(url)
        browser.upload(driver, scene)
        browser.wait_for_maps(driver)
        for name in ("cross (5)", "disk (0)"):
            box = driver.find_element("css selector", "#hfrel-classes input")
            box.click()
            box.send_keys(name)
            box.send_keys("\n")
        rollout = driver.find_element("xpath", "//*[@id='hfrel-methods']//label[.//span[text()='rollout']]")
        rollout.click()
        driver.find_element("id", "hfrel-run").click()
        browser.wait_until(driver, "return document.querySelectorAll('#hfrel-maps img').length === 4;", 60, "4 maps")
        browser.wait_for_maps(driver)
        return browser.screenshot(driver, out / "app.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for shoot in (index_page, report_page, app_page):
            folder = Path(scratch) / shoot.__name__
            folder.mkdir()
            print("wrote", shoot(folder, args.out))


if __name__ == "__main__":
    main()
