"""Every relative link and #anchor in README.md and docs/*.md resolves (headings anchored as GitHub does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`[^`]*`")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, each with its inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            line = ""
        lines.append("" if fenced else line)
    return lines


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped, spaces to
    hyphens, `-1`, `-2` ... for repeats), plus explicit `<a name|id="...">` anchors."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(text):
        anchors.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", line))
        match = HEADING.match(line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link counts by its text
        title = re.sub(r"<[^>]+>", "", title).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of each Markdown link or image outside code; link texts may wrap lines."""
    prose = "\n".join(INLINE_CODE.sub(lambda m: " " * len(m.group()), line) for line in _prose_lines(text))
    return [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(prose)]


def broken_links(page: Path) -> list[str]:
    """Each relative link or anchor of `page` that does not resolve, with the reason."""
    problems = []
    for number, target in _links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if not linked.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            problems.append(f"{where} (no heading with anchor #{anchor} in {linked.name})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_reachable_from_the_readme():
    linked, queue = {PAGES[0]}, [PAGES[0]]
    while queue:
        page = queue.pop()
        for _, target in _links(page.read_text()):
            path = (page.parent / target.partition("#")[0]).resolve()
            if path.suffix == ".md" and path.is_file() and path not in linked:
                linked.add(path)
                queue.append(path)
    assert sorted(p.name for p in set(PAGES) - linked) == []


def test_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES


def test_the_checker_finds_broken_links_and_anchors(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Section 5.2: does it help?\n\n## Repeat\n\n## Repeat\n")
    page = tmp_path / "page.md"
    page.write_text("# Title `code`\n\n"
                    "[ok](other.md#section-52-does-it-help) [ok](other.md#repeat-1) [ok](#title-code)\n"
                    "[web](https://example.org/x) `[not a link](nowhere.md)`\n"
                    "```\n[in a fence](nowhere.md)\n```\n"
                    "[gone](missing.md) [bad anchor](other.md#repeat-2) [bad here](#nothing) ![an image\n"
                    "whose text wraps](images/none.png)\n")
    problems = broken_links(page)
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "missing.md", "other.md#repeat-2", "#nothing", "images/none.png"]
    assert [p.split(": ", 1)[0] for p in problems] == ["page.md:8"] * 4
