"""A real headless Chromium for the page tests, and `hfrel app` as a server process.

selenium drives Debian's `chromium` with the matching `chromium-driver` (`.ci/run` installs both):
the browser comes from the system package manager, so nothing is downloaded at test time (playwright
would fetch its own browser build, or need pointing at this one by hand). Without a browser or
selenium the tests skip on a developer's machine and FAIL under CI=true: CI must never pass by not
looking. The same helpers take the screenshots in docs/images (`python -m tests.screenshots`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1280
STARTUP_SECONDS = 180  # importing torch, transformers and gradio on two busy cores


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip for a missing tool on a developer's machine; fail in CI, where .ci/run installs it."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run installs it; a page test must not be skipped in CI)")
    pytest.skip(reason)


def require_module(name: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        missing(f"{name} is not installed: pip install -c constraints.txt -e '.[{extra}]'")


def _executable(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def start_browser(height: int = 900) -> Any:
    """A headless Chromium driven through chromedriver; the caller quits it."""
    require_module("selenium", "dev")
    browser = os.environ.get("HFREL_CHROMIUM") or _executable("chromium", "chromium-browser", "google-chrome")
    driver_path = os.environ.get("HFREL_CHROMEDRIVER") or _executable("chromedriver")
    if browser is None or driver_path is None:
        missing("no Chromium and chromedriver on PATH: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDTH},{height}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(driver_path))


@contextlib.contextmanager
def browser(height: int = 900) -> Iterator[Any]:
    driver = start_browser(height)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: Any, script: str, timeout: float, what: str) -> Any:
    """Run `script` (JavaScript returning a value) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def broken_images(driver: Any, timeout: float = 20.0) -> list[str]:
    """Bring every <img> into view (they load lazily), wait until each has finished loading, and return
    the sources of those that failed (naturalWidth 0)."""
    driver.execute_script("document.querySelectorAll('img').forEach(function (i) { i.scrollIntoView(); });")
    driver.execute_script("window.scrollTo(0, 0);")
    count = driver.execute_script("return document.images.length;")
    for index in range(count):
        driver.execute_script(f"document.images[{index}].scrollIntoView();")
        wait_until(driver, f"return document.images[{index}].complete;", timeout, f"image {index} to load")
    driver.execute_script("window.scrollTo(0, 0);")
    return driver.execute_script(
        "return Array.from(document.images).filter(function (i) { return !(i.naturalWidth > 0); })"
        ".map(function (i) { return i.getAttribute('src'); });"
    )


def screenshot(driver: Any, path: Path, height: int | None = None) -> Path:
    """The page as shown at WIDTH pixels wide and `height` tall (default: the whole page), as a PNG."""
    full = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight);")
    driver.set_window_size(WIDTH, min(int(height or full), 4000))
    driver.execute_script("window.scrollTo(0, 0);")
    time.sleep(0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


# hfrel app as a server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def app_server(*arguments: str, log: Path) -> Iterator[str]:
    """`hfrel app` on a free localhost port in its own process; yields its URL once it answers HTTP.

    The wait is bounded (STARTUP_SECONDS), and the process is always stopped (terminate, then kill).
    """
    require_module("gradio", "app")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "hfrel.cli", "app", "--port", str(port), *arguments]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment(), cwd=ROOT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"hfrel app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"hfrel app did not answer within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def upload(driver: Any, path: Path) -> None:
    """Give the app's image input a file, as choosing it in the file dialog does."""
    clear = driver.find_elements("css selector", "#hfrel-upload button[aria-label=Clear]")
    if clear:  # a file is shown: remove it, and the file field comes back
        clear[0].click()
    wait_until(driver, "return document.querySelector('#hfrel-upload input[type=file]');", 30, "the upload field")
    driver.find_element("css selector", "#hfrel-upload input[type=file]").send_keys(str(path))


def status_text(driver: Any) -> str:
    return driver.execute_script("var s = document.querySelector('#hfrel-status'); return s ? s.innerText : '';")


def wait_for_maps(driver: Any, timeout: float = 60.0) -> int:
    """Wait until the app shows its maps (gallery images loaded); returns how many."""
    return wait_until(
        driver,
        "var imgs = Array.from(document.querySelectorAll('#hfrel-maps img'));"
        "return imgs.length > 0 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; })"
        " ? imgs.length : 0;",
        timeout,
        "the app's maps",
    )
