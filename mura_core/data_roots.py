"""Dataset folders the operator allows: the roots, a folder checked to lie inside one, bounded scans.

The dashboard reads datasets only under the roots the operator configures: `MURA_DATA_ROOTS` (folders
separated by `:`) or `data_roots` in `.streamlit/secrets.toml` (a list of folders, or one `:`-separated
string). A visitor chooses a root and a folder inside it from lists; nothing is typed as a path. A
folder named with `..`, reached through a symbolic link or resolving outside its root is refused with
`RootError`, and so is a scan that finds more files than `MAX_SCAN_FILES` or takes longer than
`MAX_SCAN_SECONDS`, or a file that links outside the root.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOTS_VARIABLE = "MURA_DATA_ROOTS"
"""The environment variable naming the allowed roots, separated by `:`."""
ROOTS_SECRET = "data_roots"
"""The key in `.streamlit/secrets.toml` that may name the roots too."""
MAX_SCAN_FILES = 200_000
"""Files one folder may hold (all levels) to be indexed; MURA v1.1 has about 40,000."""
MAX_SCAN_SECONDS = 60.0
"""Seconds a folder's scan may take before it is refused."""
MAX_LISTED_FOLDERS = 200
"""Folders offered inside a root (the root itself, then its sub-folders two levels deep)."""


class RootError(ValueError):
    """A folder the dashboard may not read, with the reason."""


@dataclass(frozen=True)
class DataRoot:
    """An allowed root: its resolved path and the name shown to visitors (never the server path)."""

    path: Path
    label: str

    def shown(self, text: object) -> str:
        """`text` (a path, a message) as visitors see it: the root's server path replaced by its label."""
        return str(text).replace(str(self.path), self.label)


def parse_roots(value: str | Iterable[str] | None) -> list[str]:
    """The folder names in `value`: a `:`-separated string or a list of strings; blanks dropped."""
    if not value:
        return []
    items = value.split(":") if isinstance(value, str) else [str(v) for v in value]
    return [item.strip() for item in items if item and item.strip()]


def allowed_roots(environment: str | None = None, secrets: str | Iterable[str] | None = None
                  ) -> tuple[list[DataRoot], list[str]]:
    """The roots the operator allows, from `MURA_DATA_ROOTS` and the secrets' `data_roots`.

    Args:
        environment: the value of `MURA_DATA_ROOTS` (None reads the process environment).
        secrets: the `data_roots` value of `.streamlit/secrets.toml`, if any.

    Returns:
        (roots, problems): existing folders, resolved and without duplicates, each with a distinct label;
        problems say which configured entries were left out and why (for the server log, not the page).
    """
    if environment is None:
        environment = os.environ.get(ROOTS_VARIABLE, "")
    roots: list[Path] = []
    problems: list[str] = []
    for entry in parse_roots(environment) + parse_roots(secrets):
        path = Path(entry).expanduser()
        if not path.is_absolute():
            problems.append(f"{entry}: a data root must be an absolute path; left out")
        elif not path.is_dir():
            problems.append(f"{entry}: not an existing folder; left out")
        elif path.resolve() not in roots:
            roots.append(path.resolve())
    labels = [p.name or str(p) for p in roots]
    labels = [f"{label} ({p.parent.name})" if labels.count(label) > 1 else label for p, label in zip(roots, labels)]
    return [DataRoot(p, label) for p, label in zip(roots, labels)], problems


def resolve_inside(root: Path, relative: str) -> Path:
    """The folder `relative` (a path inside `root`, '.' for the root itself), checked.

    Args:
        root: an allowed root (resolved).
        relative: the folder chosen inside it, `/`-separated.

    Returns:
        The folder's resolved path.

    Raises:
        RootError: `relative` is absolute or names `..`, one of its parts is a symbolic link, it resolves
            outside `root`, or it is not a folder.
    """
    root = Path(root).resolve()
    parts = PurePosixPath(relative.replace("\\", "/")).parts if relative not in ("", ".") else ()
    if relative.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        raise RootError(f"{relative}: only folders inside the dataset root can be read, not absolute paths")
    if ".." in parts:
        raise RootError(f"{relative}: '..' is not allowed; choose a folder inside the dataset root")
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise RootError(f"{relative}: {part} is a symbolic link; links are not followed")
    resolved = current.resolve()
    if resolved != root and root not in resolved.parents:
        raise RootError(f"{relative}: resolves outside the dataset root")
    if not resolved.is_dir():
        raise RootError(f"{relative}: not a folder inside the dataset root")
    return resolved


def _visible(name: str) -> bool:
    return not name.startswith((".", "__"))


def folders_inside(root: Path, depth: int = 2, limit: int = MAX_LISTED_FOLDERS) -> list[str]:
    """The folders a visitor may choose in `root`: '.' and sub-folders up to `depth` levels, no links.

    Returns:
        `/`-separated paths relative to `root`, sorted, at most `limit` of them.
    """
    found = ["."]
    level = [Path(root)]
    for _ in range(depth):
        deeper = []
        for folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if len(found) >= limit:
                    return found
                if _visible(entry.name) and entry.is_dir(follow_symlinks=False):
                    path = Path(entry.path)
                    found.append(path.relative_to(root).as_posix())
                    deeper.append(path)
        level = deeper
    return found


def scan_folder(folder: Path, root: Path, max_files: int = MAX_SCAN_FILES, max_seconds: float = MAX_SCAN_SECONDS,
                progress: Callable[[int], None] | None = None) -> int:
    """Count the files under `folder` before it is indexed, within bounds.

    Symbolic links to folders are not followed; a link (file or folder) that resolves outside `root`
    refuses the whole folder, so that indexing cannot read outside the root.

    Args:
        folder: the folder to scan (checked by `resolve_inside`).
        root: its root.
        max_files: more files than this refuses the folder.
        max_seconds: a longer scan refuses the folder.
        progress: called with the number of files seen so far, every 1,000 files.

    Returns:
        The number of files.

    Raises:
        RootError: too many files, too slow, or a link leading outside the root.
    """
    root = Path(root).resolve()
    started = time.monotonic()
    count = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    raise RootError(f"{path.relative_to(root)}: a symbolic link leading outside the dataset "
                                    "root; this folder is not indexed")
        count += len(filenames)
        if count > max_files:
            raise RootError(f"more than {max_files:,} files under this folder: choose a smaller folder "
                            "(or ask the operator to add it as its own root)")
        if time.monotonic() - started > max_seconds:
            raise RootError(f"listing this folder took longer than {max_seconds:g} s ({count:,} files so far): "
                            "choose a smaller folder")
        if progress is not None and count // 1000 != (count - len(filenames)) // 1000:
            progress(count)
    return count
