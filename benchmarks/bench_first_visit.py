"""The first visit to a cold dashboard server, in a real Chromium: from the page's first paint to the sample
study's verdict, on each runtime.

    python benchmarks/bench_first_visit.py [--runtimes onnx,keras] [--repeats 2]

For each runtime (`MURA_RUNTIME`), and each repeat, a fresh `streamlit run app.py` (the bundled weights)
and a fresh headless Debian Chromium: the page is requested, its first paint is the navigation and the
title on screen; then "Try a sample study" is clicked as soon as it is there (it appears once the models
have loaded) and the clock stops when the verdict line ("... (ensemble p = ..., threshold ...)") is shown.
Prints each visit's seconds from the request to the first paint and from the first paint to the verdict,
their medians per runtime and the ONNX / Keras ratio measured in this run (goal: the verdict within 5 s of
the first paint).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.live_server import CHROMIUM, CHROMIUM_ARGS, dashboard_server  # noqa: E402

GOAL_S = 5.0
TIMEOUT_MS = 180_000


def first_visit(runtime: str, folder: Path) -> tuple[float, float]:
    """(request -> first paint, first paint -> verdict) in seconds, for one cold server and browser."""
    from playwright.sync_api import sync_playwright

    log = folder / f"streamlit_{runtime}_{time.monotonic_ns()}.log"
    with dashboard_server(log, {"MURA_RUNTIME": runtime}) as (url, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.monotonic()
            page.goto(url, wait_until="commit")
            page.get_by_role("heading", name="Diagnose a study", level=1).wait_for(timeout=TIMEOUT_MS)
            page.locator("[data-testid='stPageLink-NavLink']").filter(has_text="Model card").wait_for(
                timeout=TIMEOUT_MS)
            painted = time.monotonic()
            page.get_by_role("button", name="Try a sample study").click(timeout=TIMEOUT_MS)
            page.get_by_text("(ensemble ").first.wait_for(timeout=TIMEOUT_MS)
            return painted - start, time.monotonic() - painted
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtimes", default="onnx,keras", help="comma-separated runtimes (default onnx,keras)")
    parser.add_argument("--repeats", type=int, default=2, help="cold visits per runtime, taking turns (default 2)")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install chromium)")
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    times: dict[str, list[tuple[float, float]]] = {r: [] for r in runtimes}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for runtime in runtimes:  # the runtimes take turns, so that both see the same load
                paint, verdict = first_visit(runtime, Path(folder))
                times[runtime].append((paint, verdict))
                print(f"{runtime:>5} visit {repeat + 1}: first paint {paint:.2f} s after the request, "
                      f"verdict {verdict:.2f} s after the first paint", flush=True)
    medians = {r: statistics.median(v for _, v in t) for r, t in times.items()}
    for runtime, median in medians.items():
        print(f"{runtime:>5}: first paint to verdict, median {median:.2f} s (goal <= {GOAL_S:g} s)")
    if "onnx" in medians and "keras" in medians:
        print(f"first paint to verdict, onnx / keras = {medians['onnx'] / medians['keras']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
