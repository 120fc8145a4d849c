"""The dashboard in a real headless Chromium: first paint on a cold server, a sample study and an upload
through Diagnose, and a screenshot of every page.

It runs `streamlit run app.py` exactly as the README says, on the bundled default weights in weights/.

Screenshots are kept in tests/artifacts/browser/ (git-ignored), or in $MURA_SCREENSHOT_DIR when set.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from benchmarks.live_server import CHROMIUM, CHROMIUM_ARGS, ROOT, dashboard_server
from mura_core.ensemble import read_manifest
from tests.data import FRACATLAS

WEIGHTS = ROOT / "weights"
ARTIFACTS = Path(os.environ.get("MURA_SCREENSHOT_DIR") or ROOT / "tests" / "artifacts" / "browser")
NAVIGATION = ["Diagnose", "Dataset explorer", "Evaluation", "Model card"]
TITLES = {"/": "Diagnose a study", "/dataset": "Dataset explorer", "/evaluation": "Evaluation",
          "/about": "Model card"}
# The goal is the navigation and the title within 2 s of the page request. The CPU here is shared with
# other jobs, and a cold Chromium itself takes 1 to 1.5 s to load Streamlit's frontend, so the test
# allows twice that; importing TensorFlow alone takes about 6 s here, so an app that imports it before
# its first paint fails.
FIRST_PAINT_GOAL_S = 2.0
FIRST_PAINT_LIMIT_S = 4.0
# Every sidebar navigation entry the page ever shows, Streamlit's own (file names) or ours.
RECORD_NAVIGATION = """
window.__legacyNav = new Set();
new MutationObserver(() => {
  document.querySelectorAll("[data-testid='stSidebarNav'] a, [data-testid='stSidebarNavLink']")
    .forEach(link => window.__legacyNav.add(link.innerText.trim()));
}).observe(document, {subtree: true, childList: true, characterData: true});
"""

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
STUDY_TIMEOUT_MS = 180_000


@contextlib.contextmanager
def _streamlit(log: Path, env: dict[str, str] | None = None):
    """`streamlit run app.py` on a free port with the bundled weights, from cold; yields the base URL."""
    with dashboard_server(log, env) as (url, _):
        yield url


@pytest.fixture
def server(tmp_path):
    """A cold dashboard server; yields (base URL, log file)."""
    log = tmp_path / "streamlit.log"
    with _streamlit(log) as url:
        yield url, log


@pytest.fixture
def chromium():
    """A headless Debian Chromium (never a downloaded browser build)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _shots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


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


def _navigation_links(page) -> list[str]:
    return [link.inner_text().split("\n")[-1].strip()
            for link in page.locator("[data-testid='stPageLink-NavLink']").all()]


@pytest.mark.parametrize("path", list(TITLES))
def test_first_paint_on_a_cold_server(tmp_path, chromium, path):
    """From `/` or a page's own URL as the first visit to a fresh server: navigation and title at once,
    and Streamlit's file-name navigation (app, about, common, ...) never shown."""
    log = tmp_path / "streamlit.log"
    with _streamlit(log) as url:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(RECORD_NAVIGATION)
        start = time.monotonic()
        page.goto(f"{url}{path}", wait_until="commit")
        page.get_by_role("heading", name=TITLES[path], level=1).wait_for(timeout=60_000)
        title_s = time.monotonic() - start
        page.locator("[data-testid='stPageLink-NavLink']").filter(has_text="Model card").wait_for(timeout=60_000)
        first_paint_s = time.monotonic() - start
        page.screenshot(path=_shots() / f"0-first-paint-{path.strip('/') or 'diagnose'}.png")
        _settle(page)  # the whole first run: on `/` this loads the models
        done_s = time.monotonic() - start
        print(f"\ncold server, first visit {path}: title {title_s:.2f} s, navigation and title {first_paint_s:.2f} s "
              f"(goal {FIRST_PAINT_GOAL_S} s, limit here {FIRST_PAINT_LIMIT_S} s), first run done {done_s:.2f} s")
        try:
            assert first_paint_s <= FIRST_PAINT_LIMIT_S, f"first paint took {first_paint_s:.2f} s"
            assert _navigation_links(page) == NAVIGATION
            assert page.evaluate("[...window.__legacyNav]") == [], "Streamlit's file-name navigation was shown"
            assert page.locator("[data-testid='stSidebarNav']").count() == 0
            assert page.get_by_text("not a diagnosis").count() >= 1  # the disclaimer, on every page
            if path == "/":
                page.get_by_role("button", name="Try a sample study").wait_for(timeout=STUDY_TIMEOUT_MS)
                members = len(read_manifest(WEIGHTS)["members"])  # the loading steps, now completed
                assert page.get_by_text(f"{members} models loaded").count() == 1
        except AssertionError as exc:
            page.screenshot(path=tmp_path / "failure.png")
            raise AssertionError(f"{exc}\n(screenshot: {tmp_path / 'failure.png'})\n"
                                 f"streamlit log:\n{log.read_text()[-3000:]}") from exc
        finally:
            page.close()


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
    _regions_on_the_page(page, shots)
    _pdf_download(page)

    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(p) for p in upload])
    page.get_by_text("Showing the uploaded study").wait_for(timeout=STUDY_TIMEOUT_MS)
    _settle(page)
    warning = page.locator("[data-testid='stAlert']").filter(has_text="was not used")
    assert "notes.png" in warning.first.inner_text()
    outside = page.locator("[data-testid='stAlert']").filter(has_text="outside the installed model's training data")
    text = outside.first.inner_text()
    assert "Humerus is outside" in text and "hand, shoulder, leg and hip radiographs" in text
    assert "not meaningful" in text
    # No headline verdict outside the coverage: the warning, then "No verdict", and no scores until asked.
    headline = page.get_by_text("No verdict: humerus is outside the model's training data").first
    assert outside.first.bounding_box()["y"] < headline.bounding_box()["y"]
    assert page.get_by_text("(ensemble ").count() == 0 and page.locator(".js-plotly-plot").count() == 0
    assert page.get_by_text("Show the scores anyway").count() == 1
    _shoot(page, shots / "2b-diagnose-upload-humerus.png")

    page.goto(f"{url}/dataset", wait_until="domcontentloaded")
    page.get_by_role("heading", name="MURA v1.1 at a glance").wait_for(timeout=60_000)
    _settle(page)
    assert page.get_by_text("MURA v1.1: images per body part").count() >= 1
    assert page.get_by_text("MURA v1.1: studies per body part, normal vs abnormal").count() >= 1
    _shoot(page, shots / "3-dataset-mura-at-a-glance.png")
    page.get_by_role("tab", name="The installed model's training data").click()
    page.get_by_text("Images per split and body part").wait_for(timeout=30_000)
    page.wait_for_timeout(800)
    assert page.get_by_text("hand, shoulder, leg and hip radiographs of FracAtlas").count() >= 1
    _shoot(page, shots / "3b-dataset-training-data.png")
    page.get_by_role("tab", name="Bundled sample images").click()
    page.wait_for_timeout(800)
    _shoot(page, shots / "3c-dataset-samples.png")
    # No dataset root is configured: no path can be typed, and the page says how an operator adds one.
    assert page.get_by_role("textbox").count() == 0
    assert page.get_by_text("No dataset folder is shared on this server").count() == 1

    page.goto(f"{url}/evaluation", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Localization").wait_for(timeout=60_000)
    _settle(page)
    # ROC, confusion, calibration, threshold, ...: plotly draws them one after another on a busy machine.
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 6", timeout=60_000)
    assert "the installed ensemble's report" in page.inner_text("body")
    assert str(ROOT) not in page.inner_text("body")  # no server path in the browser
    _shoot(page, shots / "5-evaluation.png")

    page.goto(f"{url}/about", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Privacy").wait_for(timeout=60_000)
    _settle(page)
    assert str(ROOT) not in page.inner_text("body")
    assert page.get_by_role("heading", name="Coverage").count() == 1
    _shoot(page, shots / "6-model-card.png")
    assert page.get_by_text("Traceback").count() == 0


def _pdf_download(page) -> None:
    """The PDF button makes the study's report when it is clicked (from the cached study): the verdict shown."""
    from pypdf import PdfReader

    with page.expect_download(timeout=STUDY_TIMEOUT_MS) as download:
        page.get_by_role("button", name="PDF").click()
    assert download.value.suggested_filename == "study_report.pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(download.value.path()).pages)
    shown = page.get_by_text("(ensemble ").first.inner_text()  # "Abnormal (ensemble 0.53 ≥ threshold 0.13)"
    assert shown.split(" (")[0] + " (ensemble" in text and "not a diagnosis" in text


def _regions_on_the_page(page, shots: Path) -> None:
    """The sample study's suspected regions: counted under each image, behind a toggle, and drawn with their
    scores in the first image's large view."""
    import re

    assert page.get_by_text("Show the suspected regions").count() == 1
    counted = page.get_by_text(re.compile(r"\d+ suspected region\(s\), \d+ shown as finding")).first.inner_text()
    n_regions = int(counted.split()[0])
    scores = re.findall(r"\d\.\d\d", counted.split("scores:")[-1]) if n_regions else []
    assert len(scores) == n_regions
    page.locator("[data-testid='stExpander'] summary").filter(has_text="Look closely at image 1").click()
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
    _settle(page)
    zoom = page.locator(".js-plotly-plot").last
    drawn = sorted(zoom.locator(".annotation-text").evaluate_all("texts => texts.map(t => t.textContent.trim())"))
    assert drawn == sorted(scores), (drawn, scores)
    _shoot(page, shots / "2a-diagnose-regions-zoom.png")


def test_dashboard_in_chromium(server, chromium, tmp_path):
    from PIL import Image

    url, log = server
    notes = tmp_path / "notes.png"
    notes.write_text("not a radiograph")
    humerus = tmp_path / "XR_HUMERUS.png"  # a radiograph named after a body part outside the coverage
    Image.open(sorted((WEIGHTS / "samples").glob("*.jpg"))[-1]).save(humerus)
    shots = _shots()
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _walk_through(page, url, shots, [humerus, notes])
    except Exception as exc:
        page.screenshot(path=shots / "failure.png")
        raise AssertionError(f"{exc}\n(screenshot: {shots / 'failure.png'})\n"
                             f"streamlit log:\n{log.read_text()[-4000:]}") from exc
    taken = {p.name for p in shots.glob("*.png")}
    assert {"2-diagnose-sample.png", "2b-diagnose-upload-humerus.png", "3-dataset-mura-at-a-glance.png",
            "3b-dataset-training-data.png", "5-evaluation.png", "6-model-card.png"} <= taken


def test_dataset_root_in_chromium(tmp_path, chromium):
    """The FracAtlas fixture as the only dataset root: the explorer opens it directly, chosen from a list."""
    log = tmp_path / "streamlit.log"
    with _streamlit(log, {"MURA_DATA_ROOTS": str(FRACATLAS)}) as url:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        shots = _shots()
        try:
            page.goto(f"{url}/dataset", wait_until="domcontentloaded")
            page.get_by_text("Abnormal studies").wait_for(timeout=STUDY_TIMEOUT_MS)
            _settle(page)
            assert page.get_by_role("textbox").count() == 0
            assert str(FRACATLAS) not in page.inner_text("body")  # the root is shown by name
            _shoot(page, shots / "4-dataset-fracatlas.png")
            for number, tab in enumerate(("Class balance", "Image sizes", "Browse images")):
                page.get_by_role("tab", name=tab).click()
                page.wait_for_timeout(800)
                _shoot(page, shots / f"4{'abc'[number]}-dataset-{tab.split()[-1].lower()}.png")
        except Exception as exc:
            page.screenshot(path=shots / "failure-root.png")
            raise AssertionError(f"{exc}\nstreamlit log:\n{log.read_text()[-4000:]}") from exc
        finally:
            page.close()
