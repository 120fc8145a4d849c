"""Check that every figure of an older README is still written somewhere in README.md or docs/*.md.

Usage (from the repository root):
    python scripts/figures_kept.py [REV]    # REV: the git revision whose README to read (default: c1e5400,
                                            # the last 1,235-line README before it moved into docs/)

A figure is a number (`0.871`, `1,294` = `1294`, `3e-5`), compared as a whole token. Prints the figures that
are missing with the old line that held them, and exits 1 if there are any; `--counts` also lists the figures
written fewer times now than then (a figure repeated in several places may stand once in its new page).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REV = "c1e5400"
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)(?![\w]|\.\d)")


def figures(text: str) -> dict[str, list[str]]:
    """Each figure of `text` (thousands separators dropped) with the lines that hold it, once per occurrence."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        for match in FIGURE.finditer(line):
            found.setdefault(match.group(1).rstrip(",").replace(",", ""), []).append(line.strip())
    return found


def main(argv: list[str]) -> int:
    """Compare the figures of README.md at a revision with today's README.md and docs/."""
    counts = "--counts" in argv
    argv = [arg for arg in argv if arg != "--counts"]
    rev = argv[0] if argv else DEFAULT_REV
    old = subprocess.run(["git", "show", f"{rev}:README.md"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    now = figures("\n".join(page.read_text() for page in pages))
    before = figures(old)
    missing = {figure: lines[0] for figure, lines in before.items() if figure not in now}
    for figure, line in missing.items():
        print(f"missing {figure!r}: {line[:150]}")
    if counts:
        for figure, lines in before.items():
            if figure in now and len(now[figure]) < len(lines):
                print(f"fewer {figure!r}: {len(lines)} -> {len(now[figure])}")
    print(f"{len(before) - len(missing)} of {len(before)} distinct figures of README.md at {rev} "
          f"are in README.md + docs/ ({len(pages) - 1} pages)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
