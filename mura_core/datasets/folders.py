"""One folder per class, optionally under split folders: ``ROOT/[split/]{fractured,not fractured}/*.jpg``.

Class folder names are read as labels (`POSITIVE_CLASSES`, `NEGATIVE_CLASSES`); split folder names
become the split (``validation`` -> ``val``). Each image is its own study. Tried last: it is the
loosest layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..vocabulary import NEGATIVE_WORDS, POSITIVE_WORDS, label_value
from .base import (
    DatasetError,
    IndexProblem,
    Layout,
    is_image,
    make_table,
    register_layout,
    subdirs,
    to_abs,
    walk_images,
)

POSITIVE_CLASSES, NEGATIVE_CLASSES = POSITIVE_WORDS, NEGATIVE_WORDS
SPLIT_ALIASES = {"validation": "val"}


def _class_label(name: str) -> int | None:
    return label_value(name)


def _has_class_folders(root: Path) -> bool:
    for folder in subdirs(root):
        if _class_label(folder.name) is not None:
            return True
        if any(_class_label(d.name) is not None for d in subdirs(folder)):
            return True
    return False


def _index_folders(root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
    problems: list[IndexProblem] = []
    folders = subdirs(root)
    if any(_class_label(d.name) is not None for d in folders):
        units = [("", root)]
    else:
        units = [
            (SPLIT_ALIASES.get(d.name.lower(), d.name.lower()), d) for d in folders
        ]
    rels: list[str] = []
    splits: list[str] = []
    labels: list[int] = []
    for split, base in units:
        for name in sorted(os.listdir(base)):
            if (base / name).is_file() and is_image(name):
                problems.append(
                    IndexProblem(
                        str(base / name), "image outside a class folder; not indexed"
                    )
                )
        for folder in subdirs(base):
            label = _class_label(folder.name)
            if label is None:
                known = sorted(POSITIVE_CLASSES | NEGATIVE_CLASSES)
                raise DatasetError(
                    f"{folder}: unknown class folder {folder.name!r}; "
                    f"expected one of {known}"
                )
            found = walk_images(folder, root)
            rels.extend(found)
            splits.extend([split] * len(found))
            labels.extend([label] * len(found))
    rel = pd.Series(rels, dtype=object)
    table = make_table(
        path=to_abs(rel, root).to_numpy(),
        split=splits,
        study=("folders:" + rel.str.replace(r"\.[^./]*$", "", regex=True)).to_numpy(),
        label=labels,
        dataset="folders",
    )
    return table, problems


@register_layout
class FolderLayout(Layout):
    """Class folders, directly under the root or inside split folders."""

    name = "folders"
    title = "Class folders"
    description = ("`ROOT/[train|val|test/]{normal,abnormal}/*.png`: class folders named one of "
                   f"{', '.join(sorted(POSITIVE_CLASSES | NEGATIVE_CLASSES))}")
    priority = 0

    def detect(self, root: Path) -> bool:
        return _has_class_folders(root)

    def index(self, root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
        return _index_folders(root)
