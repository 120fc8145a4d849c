"""Soak: N real Chromium sessions against one dashboard server, C at a time.

    python benchmarks/soak.py --sessions 40 --concurrency 4 [--url URL] [--max-minutes M] [--runtimes onnx,keras]

Without `--url` it starts its own server (`streamlit run app.py` on a free loopback port, the bundled
weights). Each session opens the Diagnose page in its own browser context and uploads a different study:
one or two of the bundled sample radiographs, each altered (scale, rotation, contrast) so that no two
sessions send the same bytes, named `soak<session>_XR_<PART>_<k>.png`; every third study also holds a
file that is not an image, every tenth is named after a body part outside the bundled model's coverage.
A session passes when its page shows a headline (a verdict, or the no-verdict notice outside the
coverage), its own file names and no other session's, a "was not used" warning for its bad file, and
no error. The server's resident memory is sampled once a second (psutil when installed, else /proc).

The first session runs alone (it loads the models, so its steps may take three session timeouts); the
others follow, C at a time. Time to result runs from the upload to the headline; its percentiles leave
out the first session. The run stops launching sessions at `--max-minutes` and reports what completed.
The last line is

    soak: N sessions, E errors, M mixed-up results, server RSS A -> B MiB

with N the sessions that passed, A the server's memory after the first session that passed (the models
are loaded then) and B after the last one has closed. `--runtimes onnx,keras` runs the whole soak once per
runtime, each against a fresh server started with `MURA_RUNTIME` set (ONNX Runtime, or Keras on
TensorFlow), and ends with one line per runtime and the ratio of their servers' final RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.live_server import CHROMIUM, CHROMIUM_ARGS, ROOT, dashboard_server  # noqa: E402

SAMPLES = ROOT / "weights" / "samples"
OUTSIDE_PART = "HUMERUS"  # not in the bundled model's coverage (FracAtlas: hand, shoulder, leg, hip)
HEADLINE = re.compile(r"\(ensemble \d\.\d+|No verdict")
SESSION_TAG = re.compile(r"soak(\d+)_")
UPLOAD_INPUT = "[data-testid='stFileUploaderDropzoneInput']"
SCRIPT_IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
SETTLE_MS = 300
FIRST_SESSION_FACTOR = 3  # the first session's limit per step, in session timeouts (it loads the models)


@dataclass(frozen=True)
class Study:
    """One session's upload: (name, bytes) pairs and the name of its bad file ('' when none)."""

    session: int
    files: tuple[tuple[str, bytes], ...]
    bad: str

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.files]


@dataclass
class SoakResult:
    """What a soak run measured."""

    requested: int
    sessions: int = 0
    errors: list[str] = field(default_factory=list)
    mixed_up: list[str] = field(default_factory=list)
    seconds_to_result: list[float] = field(default_factory=list)
    rss_start_mib: float | None = None
    rss_end_mib: float | None = None
    rss_peak_mib: float | None = None
    server_cpu_s: float | None = None  # the server's CPU time from the first session to the end
    wall_s: float = 0.0
    stopped_early: bool = False

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) of time to result, leaving out the first (cold) session."""
        warm = self.seconds_to_result[1:] or self.seconds_to_result
        if not warm:
            return None
        if len(warm) == 1:
            return warm[0]
        return statistics.quantiles(warm, n=100, method="inclusive")[int(q) - 1]

    def summary(self) -> str:
        """The soak line."""
        def mib(value):
            return "n/a" if value is None else f"{value:.0f}"

        return (f"soak: {self.sessions} sessions, {len(self.errors)} errors, {len(self.mixed_up)} mixed-up "
                f"results, server RSS {mib(self.rss_start_mib)} -> {mib(self.rss_end_mib)} MiB")


def sample_pictures():
    """The bundled sample radiographs (grayscale) with their body parts."""
    import pandas as pd
    from PIL import Image

    table = pd.read_csv(SAMPLES / "samples.csv", dtype=str, keep_default_na=False)
    return [(Image.open(SAMPLES / row.file).convert("L"), row.body_part.upper()) for row in table.itertuples()]


def make_study(session: int, pictures) -> Study:
    """Session `session`'s study: altered sample radiographs, sometimes a bad file (see the module doc)."""
    from PIL import ImageEnhance

    first, part = pictures[session % len(pictures)]
    chosen = [first]
    if session % 2:
        chosen.append(pictures[(session * 3 + 1) % len(pictures)][0])
    if session % 10 == 9:
        part = OUTSIDE_PART
    files = []
    for k, picture in enumerate(chosen):
        scale = 0.6 + 0.4 * ((session * 7 + k) % 11) / 10
        size = (max(64, int(picture.width * scale)), max(64, int(picture.height * scale)))
        altered = picture.resize(size).rotate((session % 9) - 4 + k, expand=False, fillcolor=0)
        altered = ImageEnhance.Contrast(altered).enhance(0.8 + 0.05 * (session % 9))
        buffer = io.BytesIO()
        altered.save(buffer, format="PNG")
        files.append((f"soak{session:05d}_XR_{part}_{k + 1}.png", buffer.getvalue()))
    bad = ""
    if session % 3 == 2:
        bad = f"soak{session:05d}_notes.png"
        files.append((bad, f"session {session}: not a radiograph".encode()))
    return Study(session, tuple(files), bad)


class RssSampler:
    """Samples a process's resident memory (MiB) once a second in a thread."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> float | None:
        """The process's RSS now, in MiB (None without a pid or when it cannot be read)."""
        if self.pid is None:
            return None
        try:
            import psutil
        except ImportError:
            psutil = None
        try:
            if psutil is not None:
                return psutil.Process(self.pid).memory_info().rss / 2**20
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError) as exc:
            print(f"soak: cannot read the server's memory: {exc}", file=sys.stderr)
        return None

    def cpu_seconds(self) -> float | None:
        """The process's CPU time so far (user + system, all its threads), or None."""
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except (OSError, ValueError, IndexError):
            return None

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            value = self.read()
            if value is not None:
                self.peak = value if self.peak is None else max(self.peak, value)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


async def _run_session(browser, url: str, study: Study, timeout_ms: int, result: SoakResult) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    label = f"session {study.session}"
    try:
        page = await context.new_page()
        await page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
        upload = page.locator(UPLOAD_INPUT)
        await upload.wait_for(state="attached", timeout=timeout_ms)
        start = time.monotonic()
        await upload.set_input_files([{"name": n, "mimeType": "image/png", "buffer": b} for n, b in study.files])
        await page.get_by_text(HEADLINE).first.wait_for(timeout=timeout_ms)
        elapsed = time.monotonic() - start
        await page.wait_for_selector(SCRIPT_IDLE, timeout=timeout_ms)
        await page.wait_for_timeout(SETTLE_MS)
        text = await page.inner_text("body")
        failures = await page.locator("[data-testid='stException']").count()
        if failures or "could not be processed" in text or "Traceback" in text:
            result.errors.append(f"{label}: the page shows an error")
            return
        others = {int(tag) for tag in SESSION_TAG.findall(text)} - {study.session}
        good = [n for n in study.names if n != study.bad]
        if others or not all(n in text for n in good):
            result.mixed_up.append(f"{label}: shows sessions {sorted(others)[:5]}, own files "
                                   f"{'present' if all(n in text for n in good) else 'missing'}")
            return
        if study.bad and f"{study.bad} was not used" not in text:
            result.errors.append(f"{label}: no 'was not used' warning for {study.bad}")
            return
        result.seconds_to_result.append(elapsed)
        result.sessions += 1
    except Exception as exc:  # a timeout or a crashed page is an error of this session, not of the run
        result.errors.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        await context.close()


async def _drive(url: str, studies, concurrency: int, timeout_ms: int, deadline: float,
                 result: SoakResult, sampler: RssSampler) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                   headless=True)
        try:
            # The first session waits for the models to load (TensorFlow's import alone takes seconds).
            await _run_session(browser, url, studies[0], FIRST_SESSION_FACTOR * timeout_ms, result)
            cpu_start = sampler.cpu_seconds()
            if result.sessions:
                result.rss_start_mib = sampler.read()
            pending = iter(studies[1:])

            async def worker():
                for study in pending:
                    if time.monotonic() > deadline:
                        result.stopped_early = True
                        return
                    await _run_session(browser, url, study, timeout_ms, result)
                    if result.rss_start_mib is None and result.sessions:  # the first one failed
                        result.rss_start_mib = sampler.read()
                    done = result.sessions + len(result.errors) + len(result.mixed_up)
                    if done % 10 == 0:
                        print(f"soak: {done} of {len(studies)} sessions done, {len(result.errors)} errors, "
                              f"RSS {sampler.read() or 0:.0f} MiB", file=sys.stderr, flush=True)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            cpu_end = sampler.cpu_seconds()
            if cpu_start is not None and cpu_end is not None:
                result.server_cpu_s = cpu_end - cpu_start
        finally:
            await browser.close()


def run_soak(sessions: int, concurrency: int, url: str | None = None, server_pid: int | None = None,
             max_minutes: float = 60.0, session_timeout_s: float = 180.0, log: Path | None = None,
             env: dict[str, str] | None = None) -> SoakResult:
    """Run the soak and return what it measured (see the module doc).

    Args:
        sessions: how many browser sessions to run.
        concurrency: how many run at the same time.
        url: a running dashboard; None starts one on loopback for this run.
        server_pid: the process id of the server at `url`, to sample its memory (ignored without `url`).
        max_minutes: no session starts after this; the run then waits only for those in flight.
        session_timeout_s: one session's limit for each step (page load, upload to result).
        log: where the started server writes its output (a temporary file by default).
        env: extra environment variables of the started server (`MURA_RUNTIME`, say).

    Returns:
        A `SoakResult`.
    """
    if not CHROMIUM.is_file():
        raise SystemExit(f"soak: {CHROMIUM} is not installed (apt-get install chromium)")
    pictures = sample_pictures()
    studies = [make_study(i, pictures) for i in range(sessions)]
    result = SoakResult(requested=sessions)
    started = time.monotonic()
    deadline = started + 60 * max_minutes
    timeout_ms = int(session_timeout_s * 1000)
    with contextlib.ExitStack() as stack:
        if url is None:
            if log is None:
                log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "streamlit.log"
            url, process = stack.enter_context(dashboard_server(log, env))
            server_pid = process.pid
        sampler = stack.enter_context(RssSampler(server_pid))
        asyncio.run(_drive(url.rstrip("/"), studies, concurrency, timeout_ms, deadline, result, sampler))
        time.sleep(2)  # the server drops the closed sessions
        result.rss_end_mib = sampler.read()
        result.rss_peak_mib = sampler.peak
    result.wall_s = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=40, help="browser sessions in all (default 40)")
    parser.add_argument("--concurrency", type=int, default=4, help="sessions at the same time (default 4)")
    parser.add_argument("--url", help="a running dashboard (default: start one on 127.0.0.1)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's process id, to sample its memory")
    parser.add_argument("--max-minutes", type=float, default=60.0,
                        help="start no session after this many minutes (default 60)")
    parser.add_argument("--session-timeout", type=float, default=180.0,
                        help="seconds one session may wait for each step (default 180)")
    parser.add_argument("--log", type=Path, help="file for the started server's output")
    parser.add_argument("--runtimes", help="comma-separated runtimes (onnx, keras): one soak per runtime, each "
                                           "with its own server (MURA_RUNTIME), compared at the end")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.concurrency < 1:
        parser.error("--sessions and --concurrency must be at least 1")
    if args.runtimes:
        if args.url:
            parser.error("--runtimes starts its own servers: leave --url out")
        return compare_runtimes(args, [r.strip() for r in args.runtimes.split(",") if r.strip()])
    return report(args, run_soak(args.sessions, args.concurrency, args.url, args.server_pid, args.max_minutes,
                                 args.session_timeout, args.log))


def compare_runtimes(args, runtimes: list[str]) -> int:
    """One soak per runtime, one after the other, each with its own server; their summaries side by side."""
    results = {}
    for runtime in runtimes:
        print(f"--- runtime {runtime} (MURA_RUNTIME={runtime})", flush=True)
        log = args.log.with_name(f"{args.log.stem}_{runtime}{args.log.suffix}") if args.log else None
        results[runtime] = run_soak(args.sessions, args.concurrency, max_minutes=args.max_minutes,
                                    session_timeout_s=args.session_timeout, log=log, env={"MURA_RUNTIME": runtime})
        report(args, results[runtime])
    for runtime, result in results.items():
        print(f"{runtime:>5}: {result.summary()}")
    ends = {r: res.rss_end_mib for r, res in results.items() if res.rss_end_mib}
    if "onnx" in ends and "keras" in ends:
        print(f"server RSS at the end, onnx / keras = {ends['onnx'] / ends['keras']:.2f}  (goal <= 0.5)")
    return 0 if all(not r.errors and not r.mixed_up for r in results.values()) else 1


def report(args, result: SoakResult) -> int:
    """Print a soak's problems, times and summary line; 0 when it had no error and no mix-up."""
    for problem in (result.errors + result.mixed_up)[:20]:
        print(f"  {problem}")
    if result.stopped_early:
        done = result.sessions + len(result.errors) + len(result.mixed_up)
        print(f"stopped at --max-minutes {args.max_minutes:g}: {done} of {result.requested} sessions ran")
    p50, p95 = result.percentile(50), result.percentile(95)
    if p50 is not None:
        rate = 60 * len(result.seconds_to_result) / result.wall_s
        print(f"time to result: p50 {p50:.2f} s, p95 {p95:.2f} s (first session that passed "
              f"{result.seconds_to_result[0]:.1f} s); {rate:.1f} sessions/min over {result.wall_s:.0f} s; "
              f"server RSS peak {result.rss_peak_mib or 0:.0f} MiB; concurrency {args.concurrency}")
    others = result.sessions + len(result.errors) + len(result.mixed_up) - 1
    if result.server_cpu_s is not None and others > 0:
        print(f"server CPU: {result.server_cpu_s / others:.2f} s per session after the first "
              f"({os.cpu_count()} CPUs; the browsers' CPU is not counted)")
    print(result.summary())
    return 0 if not result.errors and not result.mixed_up else 1


if __name__ == "__main__":
    sys.exit(main())
