"""Compare an indexed copy of MURA v1.1 with its published counts (`mura_core.mura_facts`).

Images per split and body part must match exactly. Study folders are compared loosely: a real copy
has a few more folders than the paper's study counts (some patients have both a `study1_negative`
and a `study1_positive` folder). Differences are warnings, never errors: a user may train on a
partial copy, and the tests use a tiny tree.
"""

from __future__ import annotations

import pandas as pd

from mura_core.mura_facts import BODY_PARTS, SPLITS, published_images, published_studies

STUDY_TOLERANCE = 0.01  # study folders may exceed the paper's count by this fraction (at least 3)


def compare_with_published(table: pd.DataFrame) -> pd.DataFrame:
    """Images and study folders per split and body part, found vs published.

    Args:
        table: an index table (`mura_core.datasets.index_dataset(root, "mura").table`).

    Returns:
        One row per split and body part (and a total per split): `split`, `body_part`, `images`,
        `images_published`, `studies`, `studies_published`, `images_match` (exact) and
        `studies_close` (within STUDY_TOLERANCE, at least 3 folders).
    """
    images = published_images().set_index(["split", "body_part"])["images"]
    studies = published_studies().groupby(["split", "body_part"])["studies"].sum()
    rows = []
    for split in SPLITS:
        part_rows = []
        for part in BODY_PARTS:
            found = table[(table["split"] == split) & (table["body_part"] == part)]
            part_rows.append({"split": split, "body_part": part, "images": len(found),
                              "images_published": int(images[(split, part)]),
                              "studies": int(found["study"].nunique()),
                              "studies_published": int(studies[(split, part)])})
        total = {key: sum(r[key] for r in part_rows)
                 for key in ("images", "images_published", "studies", "studies_published")}
        rows += part_rows + [{"split": split, "body_part": "all", **total}]
    frame = pd.DataFrame(rows)
    frame["images_match"] = frame["images"] == frame["images_published"]
    slack = (frame["studies_published"] * STUDY_TOLERANCE).clip(lower=3)
    frame["studies_close"] = (frame["studies"] - frame["studies_published"]).abs() <= slack
    return frame


def comparison_warnings(comparison: pd.DataFrame) -> list[str]:
    """One line per split and body part whose images differ, or whose study folders are not close."""
    lines = []
    for row in comparison.itertuples():
        where = f"{row.split} {row.body_part}"
        if not row.images_match:
            lines.append(f"{where}: {row.images} images, MURA v1.1 has {row.images_published}")
        if not row.studies_close:
            lines.append(f"{where}: {row.studies} study folders, the MURA paper counts {row.studies_published} "
                         "studies")
    return lines
