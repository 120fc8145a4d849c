"""FracAtlas: ``dataset.csv`` (image_id, body-part flags, fractured) beside ``images/``, COCO boxes.

Each image is its own study (FracAtlas has no patient ids). Body part: the one flagged part
(HAND, LEG, HIP, SHOULDER) or MIXED. Lesion boxes come from the COCO ``annotations.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .base import Box, DatasetError, IndexProblem, Layout, make_table, register_layout, walk_images

FRACATLAS_PARTS = ("hand", "leg", "hip", "shoulder")
FRACATLAS_REQUIRED = ("image_id", *FRACATLAS_PARTS, "mixed", "fractured")


def _is_fracatlas(root: Path) -> bool:
    csv = root / "dataset.csv"
    if not (csv.is_file() and (root / "images").is_dir()):
        return False
    try:
        header = pd.read_csv(csv, nrows=0).columns
    except (ValueError, OSError):
        return False
    return "image_id" in header and "fractured" in header


def _index_fracatlas(root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
    csv_path = root / "dataset.csv"
    if not csv_path.is_file() or not (root / "images").is_dir():
        raise DatasetError(f"{root}: FracAtlas needs dataset.csv and an images/ folder")
    csv = pd.read_csv(csv_path)
    missing_columns = [c for c in FRACATLAS_REQUIRED if c not in csv.columns]
    if missing_columns:
        raise DatasetError(f"{csv_path}: missing columns {missing_columns}")
    problems: list[IndexProblem] = []

    # Real FracAtlas copies keep images in images/Fractured and images/Non_fractured.
    files: dict[str, str] = {}
    for rel in walk_images(root / "images", root):
        name = rel.rsplit("/", 1)[-1]
        if name in files:
            problems.append(
                IndexProblem(str(root / rel), "image file name appears twice")
            )
            continue
        files[name] = str(root / rel)
    ids = csv["image_id"].astype(str).str.strip()
    paths = ids.map(files)
    for image_id in ids[paths.isna()]:
        problems.append(
            IndexProblem(
                str(root / "images" / image_id),
                "in dataset.csv but missing; not indexed",
            )
        )
    for name in sorted(set(files) - set(ids)):
        problems.append(
            IndexProblem(files[name], "image not listed in dataset.csv; not indexed")
        )

    keep = paths.notna()
    csv, ids, paths = csv[keep], ids[keep], paths[keep]
    flags = csv[list(FRACATLAS_PARTS)].fillna(0).astype(int) == 1
    first = np.select(
        [flags[p] for p in FRACATLAS_PARTS], [p.upper() for p in FRACATLAS_PARTS], ""
    )
    mixed = (csv["mixed"].fillna(0).astype(int) == 1) | (flags.sum(axis=1) > 1)
    body_part = np.where(mixed, "MIXED", first)
    table = make_table(
        path=paths.to_numpy(),
        body_part=body_part,
        study=("fracatlas:" + ids.str.replace(r"\.[^.]*$", "", regex=True)).to_numpy(),
        label=csv["fractured"].fillna(0).astype(int).to_numpy(),
        dataset="fracatlas",
    )
    return table, problems


def _fracatlas_annotation_file(root: Path) -> Path:
    direct = root / "annotations.json"
    if direct.is_file():
        return direct
    candidates = (
        sorted((root / "Annotations").rglob("*.json"))
        if (root / "Annotations").is_dir()
        else []
    )
    for candidate in candidates:
        if "COCO" in str(candidate.relative_to(root)).upper():
            return candidate
    raise DatasetError(
        f"{root}: no COCO annotations; looked for annotations.json and "
        "Annotations/**/COCO*/*.json"
    )


def load_fracatlas_boxes(
    root: str | os.PathLike,
) -> dict[str, list[Box]]:
    """Read the fracture boxes of FracAtlas.

    Args:
        root: The FracAtlas folder (holding ``annotations.json``, COCO format).

    Returns:
        A map from image file name to its boxes as ``(x, y, w, h)`` in pixels of the
        stored image; every image of the annotation file is a key, possibly with no
        boxes.

    Raises:
        DatasetError: If no annotation file is found.
    """
    path = _fracatlas_annotation_file(Path(root).expanduser())
    coco = json.loads(path.read_text())
    names = {image["id"]: image["file_name"] for image in coco.get("images", [])}
    boxes: dict[str, list[Box]] = {
        n: [] for n in names.values()
    }
    for annotation in coco.get("annotations", []):
        name = names.get(annotation.get("image_id"))
        bbox = annotation.get("bbox")
        if name is not None and bbox and len(bbox) == 4:
            boxes[name].append(tuple(float(v) for v in bbox))
    return boxes


@register_layout
class FracAtlasLayout(Layout):
    """FracAtlas (Abedeen et al., Scientific Data 2023), as published or as a derived copy."""

    name = "fracatlas"
    title = "FracAtlas"
    positive_label = "fracture"
    description = "the folder holding `dataset.csv` (with `image_id` and `fractured` columns) and `images/`"
    notes = ("FracAtlas labels mean fractured (shown as abnormal) or not fractured (normal); it records "
             "no patient ids, so images of one patient may appear more than once.")
    priority = 20

    def detect(self, root: Path) -> bool:
        return _is_fracatlas(root)

    def index(self, root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
        return _index_fracatlas(root)

    def boxes(self, root: str | os.PathLike) -> dict[str, list[Box]]:
        return load_fracatlas_boxes(root)
