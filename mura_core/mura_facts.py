"""MURA v1.1 as published: the figures a user's copy (and the Dataset explorer) are compared with.

Facts only; no MURA image or label file is bundled. Two sources:

* studies per body part, split and label: Table 1 of Rajpurkar et al., "MURA: Large Dataset for
  Abnormality Detection in Musculoskeletal Radiographs" (arXiv:1712.06957; train and valid, the
  207-study test set is not public);
* images per body part and split: the rows of MURA v1.1's `train_image_paths.csv` (36,808) and
  `valid_image_paths.csv` (3,197).

`compare_with_published` checks a user's indexed copy against them (used by `train.train_mura`,
`python -m mura_core index` and the Dataset explorer); `comparison_summary` says in a few lines what
differs, naming missing and complete body parts of a partial copy instead of one line per cell.
"""

from __future__ import annotations

import pandas as pd

from .body_parts import MURA_BODY_PARTS, body_part_label
from .vocabulary import LABEL_NAMES

CITATION = ("Rajpurkar P, Irvin J, et al. MURA: Large Dataset for Abnormality Detection in Musculoskeletal "
            "Radiographs. arXiv:1712.06957 (2017), Table 1.")

BODY_PARTS = MURA_BODY_PARTS
SPLITS = ("train", "valid")
STUDY_TOLERANCE = 0.01
"""Study folders may exceed the paper's count by this fraction (at least 3): a real copy has a few more
folders than studies (some patients have both a `study1_negative` and a `study1_positive` folder)."""
MATCH_TEXT = "the data matches MURA v1.1's published counts"

# body part -> (train normal, train abnormal, valid normal, valid abnormal) studies.
_STUDIES = {
    "XR_ELBOW": (1094, 660, 92, 66),
    "XR_FINGER": (1280, 655, 92, 83),
    "XR_FOREARM": (590, 287, 69, 64),
    "XR_HAND": (1497, 521, 101, 66),
    "XR_HUMERUS": (321, 271, 68, 67),
    "XR_SHOULDER": (1364, 1457, 99, 95),
    "XR_WRIST": (2134, 1326, 140, 97),
}
# body part -> (train, valid) images.
_IMAGES = {
    "XR_ELBOW": (4931, 465),
    "XR_FINGER": (5106, 461),
    "XR_FOREARM": (1825, 301),
    "XR_HAND": (5543, 460),
    "XR_HUMERUS": (1272, 288),
    "XR_SHOULDER": (8379, 563),
    "XR_WRIST": (9752, 659),
}


def published_studies() -> pd.DataFrame:
    """Studies per body part, split and label: columns body_part, split, label ("normal"/"abnormal"), studies."""
    rows = []
    for part, (tn, ta, vn, va) in _STUDIES.items():
        for split, normal, abnormal in (("train", tn, ta), ("valid", vn, va)):
            rows.append({"body_part": part, "split": split, "label": LABEL_NAMES[0], "studies": normal})
            rows.append({"body_part": part, "split": split, "label": LABEL_NAMES[1], "studies": abnormal})
    return pd.DataFrame(rows, columns=["body_part", "split", "label", "studies"])


def published_images() -> pd.DataFrame:
    """Images per body part and split: columns body_part, split, images."""
    rows = [{"body_part": part, "split": split, "images": count}
            for part, counts in _IMAGES.items() for split, count in zip(SPLITS, counts)]
    return pd.DataFrame(rows, columns=["body_part", "split", "images"])


def published_totals() -> pd.DataFrame:
    """Per split: images, studies, normal and abnormal studies (index: split)."""
    studies = published_studies().pivot_table(index="split", columns="label", values="studies", aggfunc="sum")
    images = published_images().groupby("split")["images"].sum()
    normal, abnormal = studies[LABEL_NAMES[0]], studies[LABEL_NAMES[1]]
    return pd.DataFrame({"images": images, "studies": normal + abnormal,
                         "normal_studies": normal, "abnormal_studies": abnormal})


def compare_with_published(table: pd.DataFrame) -> pd.DataFrame:
    """Images and study folders per split and body part, found vs published.

    Images per split and body part must match exactly; study folders are compared loosely
    (`STUDY_TOLERANCE`). Differences are warnings, never errors: a user may train on a partial copy.

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


def comparison_summary(comparison: pd.DataFrame) -> list[str]:
    """What differs from the published counts, in few lines ([] when the copy matches).

    Body parts with no image in any split are named in one line, body parts that match in every
    split in another; only the remaining body parts get one line per differing split.
    """
    parts = comparison[comparison["body_part"] != "all"]
    groups = dict(tuple(parts.groupby("body_part", sort=False)))
    missing = [p for p, g in groups.items() if (g["images"] == 0).all()]
    complete = [p for p, g in groups.items() if (g["images_match"] & g["studies_close"]).all()]
    if len(complete) == len(groups):
        return []
    names = lambda codes: ", ".join(body_part_label(c) for c in codes)  # noqa: E731
    lines = []
    if missing:
        lines.append(f"a partial copy: no image of {names(missing)} (of MURA's {len(groups)} body parts)")
    if complete and missing:
        lines.append(f"complete (as published): {names(complete)}")
    return lines + comparison_warnings(parts[~parts["body_part"].isin([*missing, *complete])])
