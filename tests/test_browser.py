"""The dashboard in a real headless Chromium: a sample study through Diagnose, a screenshot of every page.

It runs `streamlit run app.py` exactly as the README says, on the bundled default weights in weights/.

Set MURA_SCREENSHOT_DIR to keep the screenshots there (they go to pytest's tmp folder otherwise).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mura_core.ensemble import read_manifest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"
WEIGHTS = ROOT / "weights"
START_TIMEOUT = 90

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
STUDY_TIMEOUT_MS = 180_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not start within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path):
    """`streamlit run app.py` on a free port with the bundled weights; yields the base URL."""
    port = _free_port()
    log = tmp_path / "streamlit.log"
    env = {key: value for key, value in os.environ.items() if key != "MURA_WEIGHTS"}
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _settle(page) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                           timeout=STUDY_TIMEOUT_MS)
    page.wait_for_timeout(500)


def _shoot(page, path: Path) -> None:
    """Screenshot the whole page: Streamlit scrolls inside its main block, so grow the viewport to fit."""
    height = page.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(int(height), size["height"]), 8000)})
    page.wait_for_timeout(500)
    page.screenshot(path=path)
    page.set_viewport_size(size)


def _walk_through(page, url: str, shots: Path, upload: list[Path]) -> None:
    """Diagnose with a sample study and with uploaded files, then every other page, with screenshots."""
    page.goto(url, wait_until="domcontentloaded")
    button = page.get_by_role("button", name="Try a sample study")
    button.wait_for(timeout=STUDY_TIMEOUT_MS)
    _settle(page)
    _shoot(page, shots / "1-diagnose-empty.png")

    button.click()
    verdict = page.get_by_text("(ensemble ").first
    verdict.wait_for(timeout=STUDY_TIMEOUT_MS)
    _settle(page)
    manifest = read_manifest(WEIGHTS)
    assert f"threshold {manifest['threshold']:.2f}" in verdict.inner_text()
    per_image = len(manifest["members"]) + 2  # original, each member's CAM, the fused CAM
    images = page.locator("[data-testid='stImage'] img")
    images.nth(per_image - 1).wait_for(timeout=30_000)
    assert images.count() % per_image == 0
    images.last.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")]"
        ".every(img => img.complete && img.naturalWidth > 0)", timeout=30_000)
    assert page.locator(".js-plotly-plot").count() >= 1
    assert page.get_by_text("not a diagnosis").count() >= 1
    _shoot(page, shots / "2-diagnose-sample.png")

    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(p) for p in upload])
    page.get_by_text("Showing the uploaded study").wait_for(timeout=STUDY_TIMEOUT_MS)
    _settle(page)
    warning = page.locator("[data-testid='stAlert']").filter(has_text="was not used")
    assert "notes.png" in warning.first.inner_text()
    assert "(ensemble " in page.get_by_text("(ensemble ").first.inner_text()
    _shoot(page, shots / "2b-diagnose-upload.png")

    page.goto(f"{url}/dataset", wait_until="domcontentloaded")
    page.get_by_text("Bundled sample images").wait_for(timeout=60_000)
    _settle(page)
    _shoot(page, shots / "3-dataset-samples.png")
    if FRACATLAS.is_dir():
        field = page.get_by_role("textbox", name="Dataset folder")
        field.fill(str(FRACATLAS))
        field.press("Enter")
        page.get_by_text("Abnormal studies").wait_for(timeout=STUDY_TIMEOUT_MS)
        _settle(page)
        _shoot(page, shots / "4-dataset-fracatlas.png")
        for number, tab in enumerate(("Class balance", "Image sizes", "Browse images")):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(800)
            _shoot(page, shots / f"4{'abc'[number]}-dataset-{tab.split()[-1].lower()}.png")

    page.goto(f"{url}/evaluation", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Localization").wait_for(timeout=60_000)
    _settle(page)
    assert page.locator(".js-plotly-plot").count() >= 6  # ROC, confusion, calibration, threshold, ...
    _shoot(page, shots / "5-evaluation.png")

    page.goto(f"{url}/about", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Privacy").wait_for(timeout=60_000)
    _settle(page)
    _shoot(page, shots / "6-model-card.png")
    assert page.get_by_text("Traceback").count() == 0


def test_dashboard_in_chromium(server, tmp_path):
    url, log = server
    notes = tmp_path / "notes.png"
    notes.write_text("not a radiograph")
    upload = [sorted((WEIGHTS / "samples").glob("*.jpg"))[-1], notes]
    shots = Path(os.environ.get("MURA_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _walk_through(page, url, shots, upload)
        except Exception as exc:
            page.screenshot(path=shots / "failure.png")
            raise AssertionError(f"{exc}\n(screenshot: {shots / 'failure.png'})\n"
                                 f"streamlit log:\n{log.read_text()[-4000:]}") from exc
        finally:
            browser.close()
    taken = {p.name for p in shots.glob("*.png")}
    assert {"2-diagnose-sample.png", "5-evaluation.png", "6-model-card.png"} <= taken
