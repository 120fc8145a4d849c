"""What every dataset layout shares: the index table, its problems, and the registry of layouts.

A layout (`Layout`) knows how to detect itself in a folder, index its images into the table of
`COLUMNS`, and, where it has them, give lesion boxes. Layouts register themselves by name
(`register_layout`); `index_dataset`, the CLI's `--format`, `train.evaluate` and the Dataset explorer
all take their choices from `layout_names()`, so adding a layout is adding one module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..imaging import is_image_name

COLUMNS: tuple[str, ...] = (
    "path",
    "split",
    "body_part",
    "patient",
    "study",
    "label",
    "dataset",
)
"""The index table's columns, for every layout."""

Box = tuple[float, float, float, float]
"""A lesion box (x, y, w, h) in pixels of the stored image."""

# Folders that operating systems and archivers leave behind; never part of a dataset.
_IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


class DatasetError(ValueError):
    """A dataset root that cannot be indexed (missing, empty or of unknown layout)."""


@dataclass(frozen=True)
class IndexProblem:
    """One inconsistency found while indexing.

    Attributes:
        path: The file, folder or study the problem is about.
        reason: What is wrong and what the index did about it.
    """

    path: str
    reason: str


@dataclass
class DatasetIndex:
    """The images of one dataset (or several, see :func:`combine`).

    Attributes:
        table: One row per image with the columns in :data:`COLUMNS`.
        problems: Inconsistencies found while indexing.
        format: the layout's name (``"mura"``, ...) or ``"combined"``.
    """

    table: pd.DataFrame
    problems: list[IndexProblem] = field(default_factory=list)
    format: str = ""


class Layout:
    """One dataset layout. Subclasses set `name`, `description` and implement `detect` and `index`.

    Attributes:
        name: the registry key (the CLI's `--format` value).
        title: the dataset's name for people ("MURA v1.1").
        description: what the layout looks like on disk (Markdown), for help texts and errors.
        notes: what its labels and ids mean, shown beside an index of it ('' when nothing to say).
        positive_label: what label 1 means in this dataset ("abnormal", "fracture").
        priority: detection order, highest first; a catch-all layout (class folders) goes last.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    notes: ClassVar[str] = ""
    positive_label: ClassVar[str] = "abnormal"
    priority: ClassVar[int] = 10

    def detect(self, root: Path) -> bool:
        """Whether `root` (an existing, non-empty folder) has this layout."""
        raise NotImplementedError

    def index(self, root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
        """Every image under `root`: a table with `COLUMNS` and the problems found."""
        raise NotImplementedError

    def boxes(self, root: str | os.PathLike) -> dict[str, list[Box]] | None:
        """Lesion boxes by image file name, or None when the layout has none (the default)."""
        return None


_LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: type[Layout]) -> type[Layout]:
    """Class decorator: add a layout to the registry under its `name` (names are unique)."""
    if not layout.name:
        raise ValueError(f"{layout.__name__} has no name")
    if layout.name in _LAYOUTS or layout.name in ("auto", "combined"):
        raise ValueError(f"dataset layout {layout.name!r} is already registered or reserved")
    _LAYOUTS[layout.name] = layout()
    return layout


def layout_names() -> list[str]:
    """The registered layouts' names, in detection order."""
    return [layout.name for layout in _layouts_in_order()]


def get_layout(name: str) -> Layout:
    """The layout registered as `name`.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    try:
        return _LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown dataset format {name!r}; expected 'auto' or one of {layout_names()}") from None


def _layouts_in_order() -> list[Layout]:
    return sorted(_LAYOUTS.values(), key=lambda layout: -layout.priority)


def detect_format(root: str | os.PathLike) -> str:
    """Tell which layout a dataset folder has.

    Args:
        root: The dataset folder.

    Returns:
        The name of the first registered layout (by priority) that recognises it.

    Raises:
        DatasetError: If the root is missing or empty, or no known layout matches.
    """
    path = check_root(root)
    for layout in _layouts_in_order():
        if layout.detect(path):
            return layout.name
    looked_for = "; ".join(f"{layout.name}: {layout.description}" for layout in _layouts_in_order())
    raise DatasetError(f"{path}: unknown dataset layout; looked for {looked_for}")


# --- helpers for layouts


def visible(name: str) -> bool:
    """Whether a file or folder name is part of a dataset (not hidden, not archiver litter)."""
    return not name.startswith(".") and name not in _IGNORED_NAMES


def is_image(name: str) -> bool:
    """Whether a visible file name has a supported image ending (`imaging.SUPPORTED_EXTENSIONS`)."""
    return visible(name) and is_image_name(name)


def subdirs(folder: Path) -> list[Path]:
    """Visible subfolders, sorted; none when the folder cannot be read."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and visible(p.name))
    except OSError:
        return []


def check_root(root: str | os.PathLike) -> Path:
    """The resolved dataset root; DatasetError when it is missing, not a folder or empty."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: dataset root does not exist")
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset root is not a folder")
    path = path.resolve()
    if not any(visible(p.name) for p in path.iterdir()):
        raise DatasetError(f"{path}: dataset root is empty")
    return path


def empty_table() -> pd.DataFrame:
    """An index table with no rows."""
    table = pd.DataFrame({c: pd.Series([], dtype=object) for c in COLUMNS})
    table["label"] = table["label"].astype("int64")
    return table


def make_table(**columns) -> pd.DataFrame:
    """An index table from column values (a str fills the column; missing columns are empty)."""
    n = len(columns["path"])
    data = {}
    for name in COLUMNS:
        value = columns.get(name, "")
        if isinstance(value, str):
            value = [value] * n
        data[name] = np.asarray(value, dtype=object)
    table = pd.DataFrame(data, columns=list(COLUMNS))
    table["label"] = table["label"].astype("int64")
    return table


def relative_keys(paths: pd.Series, root: Path) -> pd.Series:
    """Paths relative to ``root`` as posix strings; ValueError for paths outside it."""
    prefix = str(root).rstrip(os.sep) + os.sep
    paths = paths.astype(str)
    outside = ~paths.str.startswith(prefix)
    if outside.any():
        raise ValueError(f"{paths[outside].iloc[0]} is not under {root}")
    keys = paths.str.slice(len(prefix))
    return keys.str.replace(os.sep, "/", regex=False) if os.sep != "/" else keys


def walk_images(folder: Path, base: Path) -> list[str]:
    """Non-hidden image files under ``folder``, as posix paths relative to ``base``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if visible(d)]
        rel = os.path.relpath(dirpath, base).replace(os.sep, "/")
        found.extend(f"{rel}/{name}" for name in filenames if is_image(name))
    return sorted(found)


def to_abs(rel: pd.Series, base: Path) -> pd.Series:
    """Posix paths relative to `base` as absolute paths."""
    if os.sep != "/":
        rel = rel.str.replace("/", os.sep, regex=False)
    return str(base) + os.sep + rel


def combine(indexes: Sequence[DatasetIndex]) -> DatasetIndex:
    """Join several indexes into one.

    Study and patient ids carry a dataset prefix, so they stay unique across datasets.

    Args:
        indexes: The indexes to join, in order.

    Returns:
        One index with the tables concatenated (fresh index), all problems and format
        ``"combined"``; an image path present more than once is reported as a problem.
    """
    tables = [index.table.loc[:, list(COLUMNS)] for index in indexes]
    table = pd.concat(tables, ignore_index=True) if tables else empty_table()
    problems = [problem for index in indexes for problem in index.problems]
    for path in table.loc[table["path"].duplicated(), "path"].unique():
        problems.append(IndexProblem(path, "image appears in more than one of the combined indexes"))
    return DatasetIndex(table=table, problems=problems, format="combined")
