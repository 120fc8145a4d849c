"""The README's screenshot: the Diagnose page on a bundled sample study, in Debian's Chromium.

Usage (from the repository root; needs `apt-get install chromium` and playwright from requirements.txt):
    python scripts/screenshot.py [--out docs/images/diagnose.png] [--width 1400] [--max-height 1760]

It starts the dashboard as the browser test does (`benchmarks/live_server.py`: `streamlit run app.py` on a
free loopback port, the installed weights in `weights/`), presses *Try a sample study* (the first sample),
waits until the verdict and every image are on screen, and saves the top of the page as a PNG with at most
256 colours (Pillow) so that the committed file stays small. Run it again after installing another ensemble.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.live_server import CHROMIUM, CHROMIUM_ARGS, dashboard_server  # noqa: E402

TIMEOUT_MS = 180_000


def _settle(page) -> None:
    """Wait until Streamlit has finished running the script and every image has loaded."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")]"
        ".every(img => img.complete && img.naturalWidth > 0)", timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)


def take(out: Path, width: int, max_height: int) -> Path:
    """Screenshot the Diagnose page on the first sample study into `out`.

    Args:
        out: the PNG to write (its folder is created).
        width: the browser window's width in CSS pixels.
        max_height: the most of the page, from its top, to keep.

    Returns:
        `out`.
    """
    from PIL import Image
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp, dashboard_server(Path(tmp) / "streamlit.log") as (url, _):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": width, "height": 1000})
                page.goto(url, wait_until="domcontentloaded")
                button = page.get_by_role("button", name="Try a sample study")
                button.wait_for(timeout=TIMEOUT_MS)
                _settle(page)
                button.click()
                page.get_by_text("(ensemble ").first.wait_for(timeout=TIMEOUT_MS)
                _settle(page)
                # Streamlit scrolls inside its main block: grow the window to the page, then keep its top.
                height = page.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollHeight")
                page.set_viewport_size({"width": width, "height": min(int(height), max_height)})
                _settle(page)
                raw = Path(tmp) / "raw.png"
                page.screenshot(path=str(raw))
            finally:
                browser.close()
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and take the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "diagnose.png")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--max-height", type=int, default=1760)
    args = parser.parse_args(argv)
    out = take(args.out, args.width, args.max_height)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
