"""A real dashboard server and a real Chromium, as the browser test and the soak benchmark use them.

`dashboard_server` runs `streamlit run app.py` exactly as the README says, on a free loopback port;
`CHROMIUM` and `CHROMIUM_ARGS` launch Debian's Chromium (never a downloaded browser build).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT = 90


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT) -> None:
    """Wait until the server at `url` answers its health check; raise with the log's tail if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not start within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def dashboard_server(log: Path, env: dict[str, str] | None = None):
    """`streamlit run app.py` on a free port with the bundled weights, from cold.

    Args:
        log: file that receives the server's output.
        env: extra environment variables (`MURA_WEIGHTS` is otherwise removed, so the bundled weights load).

    Yields:
        (base URL, the server process).
    """
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key != "MURA_WEIGHTS"}
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(env or {})
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
