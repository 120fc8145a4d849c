"""Index radiograph datasets into one table of images, labels and patient/study ids.

Each layout is one module that registers itself (`base.register_layout`): ``mura`` (MURA v1.1),
``fracatlas`` (FracAtlas, with fracture boxes) and ``folders`` (one folder per class, optionally
under split folders). Every index is a `DatasetIndex` whose table has the columns in `COLUMNS`.
Inconsistencies are collected as `IndexProblem` records instead of being dropped silently; a
root that cannot be used at all raises `DatasetError`.

To add a layout: write a module with a `Layout` subclass decorated with `register_layout`, import
it below, and test it; the CLI, `train.evaluate` and the Dataset explorer offer it from then on.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..body_parts import MURA_BODY_PARTS
from . import (  # noqa: F401  (each registers its layout; `priority` sets the order)
    folders,
    fracatlas,
    leakage,  # noqa: F401  (identical files, near-duplicates and patients across splits)
    mura,
)
from .base import (
    COLUMNS,
    Box,
    DatasetError,
    DatasetIndex,
    IndexProblem,
    Layout,
    check_root,
    combine,
    detect_format,
    get_layout,
    layout_names,
    register_layout,
)
from .fracatlas import load_fracatlas_boxes
from .mura import parse_mura_path
from .splits import apply_split_file, split_by_patient, write_split_file
from .stats import summarize

__all__ = [
    "COLUMNS", "MURA_BODY_PARTS", "Box", "DatasetError", "DatasetIndex", "IndexProblem", "Layout",
    "combine", "detect_format", "get_layout", "index_dataset", "layout_names", "leakage", "load_boxes",
    "load_fracatlas_boxes", "parse_mura_path", "register_layout", "split_by_patient", "summarize",
    "write_split_file",
]


def index_dataset(
    root: str | os.PathLike,
    format: str = "auto",
    split_file: str | os.PathLike | None = None,
) -> DatasetIndex:
    """Index every image of a dataset folder.

    Args:
        root: The dataset folder (for MURA, the ``MURA-v1.1`` folder or its parent).
        format: ``"auto"`` (see `detect_format`) or a registered layout name (`layout_names()`).
        split_file: Optional CSV with columns ``path_key,split`` (paths relative to ``root``,
            posix) that sets the ``split`` column; see `write_split_file`.

    Returns:
        The index: a table with the columns in `COLUMNS`, the problems found and the format.

    Raises:
        DatasetError: If the root is missing, empty, of unknown layout or holds no images.
        ValueError: If ``format`` is not a known name.
    """
    if format != "auto":
        get_layout(format)  # raises for an unknown name, before touching the disk
    path = check_root(root)
    fmt = detect_format(path) if format == "auto" else format
    table, problems = get_layout(fmt).index(path)
    if table.empty:
        detail = f"; first problem: {problems[0].path}: {problems[0].reason}" if problems else ""
        raise DatasetError(f"{path}: no images found in the {fmt} layout{detail}")
    if split_file is not None:
        table, split_problems = apply_split_file(table, path, Path(split_file))
        problems.extend(split_problems)
    return DatasetIndex(table=table.reset_index(drop=True), problems=problems, format=fmt)


def load_boxes(root: str | os.PathLike, format: str = "auto") -> dict[str, list[Box]] | None:
    """Lesion boxes by image file name for a dataset that has them (FracAtlas), else None.

    Args:
        root: The dataset folder.
        format: ``"auto"`` or a registered layout name.
    """
    name = detect_format(root) if format == "auto" else format
    return get_layout(name).boxes(root)
