"""Dataset roots set by the operator: parsing, folders checked to lie inside a root, bounded scans."""

from __future__ import annotations

import os

import pytest

from mura_core.data_roots import (
    DataRoot,
    RootError,
    allowed_roots,
    folders_inside,
    parse_roots,
    resolve_inside,
    scan_folder,
)


@pytest.fixture
def tree(tmp_path):
    """root/{a/b, c} with files, a secret folder beside the root, and links out of and inside the root."""
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / ".hidden").mkdir()
    for folder in ("a", "a/b", "c"):
        (root / folder / "x.png").write_bytes(b"x")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwords.txt").write_text("no")
    (root / "out").symlink_to(secret, target_is_directory=True)
    (root / "inside").symlink_to(root / "c", target_is_directory=True)
    return root, secret


def test_parse_and_allowed_roots(tree, tmp_path):
    root, secret = tree
    assert parse_roots(" /a : :/b ") == ["/a", "/b"] and parse_roots(["/a", ""]) == ["/a"] and parse_roots(None) == []
    roots, problems = allowed_roots(f"{root}:{root}/:relative/dir:{tmp_path / 'missing'}", [str(secret)])
    assert [r.path for r in roots] == [root.resolve(), secret.resolve()]
    assert [r.label for r in roots] == ["root", "secret"]
    assert len(problems) == 2 and "absolute" in problems[0] and "not an existing folder" in problems[1]
    assert allowed_roots("", None) == ([], [])


def test_allowed_roots_reads_the_environment(tree, monkeypatch):
    root, _ = tree
    monkeypatch.setenv("MURA_DATA_ROOTS", str(root))
    assert [r.path for r in allowed_roots()[0]] == [root.resolve()]
    monkeypatch.delenv("MURA_DATA_ROOTS")
    assert allowed_roots()[0] == []


def test_duplicate_names_get_distinct_labels(tmp_path):
    first, second = tmp_path / "x" / "data", tmp_path / "y" / "data"
    first.mkdir(parents=True), second.mkdir(parents=True)
    assert [r.label for r in allowed_roots(f"{first}:{second}")[0]] == ["data (x)", "data (y)"]


def test_resolve_inside_accepts_folders_of_the_root(tree):
    root, _ = tree
    assert resolve_inside(root, ".") == root.resolve()
    assert resolve_inside(root, "a/b") == (root / "a" / "b").resolve()


@pytest.mark.parametrize("relative, reason", [
    ("..", "'..' is not allowed"),
    ("a/../../secret", "'..' is not allowed"),
    ("../root/a", "'..' is not allowed"),
    ("out", "symbolic link"),
    ("inside", "symbolic link"),  # links are refused even when they stay inside
    ("/etc", "not absolute paths"),
    ("a/x.png", "not a folder"),
    ("missing", "not a folder"),
])
def test_resolve_inside_refuses(tree, relative, reason):
    root, _ = tree
    with pytest.raises(RootError, match=reason):
        resolve_inside(root, relative)


def test_a_root_that_is_a_link_resolves_to_its_target(tree, tmp_path):
    root, secret = tree
    roots, _ = allowed_roots(str(root / "out"))  # the operator named a link: its target is the root
    assert roots[0].path == secret.resolve()
    assert resolve_inside(roots[0].path, ".") == secret.resolve()


def test_folders_inside_lists_no_links_and_no_hidden_folders(tree):
    root, _ = tree
    assert folders_inside(root) == [".", "a", "c", "a/b"]
    assert folders_inside(root, depth=1) == [".", "a", "c"]
    assert folders_inside(root, limit=2) == [".", "a"]


def test_scan_is_bounded_and_refuses_links_outside(tree, tmp_path):
    root, secret = tree
    with pytest.raises(RootError, match="symbolic link leading outside"):
        scan_folder(root, root)
    os.unlink(root / "out")
    assert scan_folder(root, root) == 3  # the link inside the root is not followed
    seen = []
    assert scan_folder(root / "a", root, progress=seen.append) == 2 and seen == []
    with pytest.raises(RootError, match="more than 2 files"):
        scan_folder(root, root, max_files=2)
    with pytest.raises(RootError, match="took longer than"):
        scan_folder(root, root, max_seconds=-1)
    (root / "c" / "leak.png").symlink_to(secret / "passwords.txt")
    with pytest.raises(RootError, match="leak.png"):
        scan_folder(root / "c", root)


def test_scan_reports_progress(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(2500):
        (root / f"{i}.png").touch()
    seen = []
    assert scan_folder(root, root, progress=seen.append) == 2500
    assert seen == [2500]  # one listing step here; it is called each time a thousand more files are seen


def test_a_root_shows_its_label_never_its_server_path(tmp_path):
    root = DataRoot(tmp_path / "data", "data")
    assert root.shown(tmp_path / "data" / "train" / "a.png") == "data/train/a.png"
    assert root.shown(f"cannot read {tmp_path / 'data'}/x.png: truncated") == "cannot read data/x.png: truncated"
    assert root.shown("/elsewhere/y.png") == "/elsewhere/y.png"
