"""MURA v1.1 as published: the figures a user's copy (and the Dataset explorer) are compared with.

Facts only; no MURA image or label file is bundled. Two sources:

* studies per body part, split and label: Table 1 of Rajpurkar et al., "MURA: Large Dataset for
  Abnormality Detection in Musculoskeletal Radiographs" (arXiv:1712.06957; train and valid, the
  207-study test set is not public);
* images per body part and split: the rows of MURA v1.1's `train_image_paths.csv` (36,808) and
  `valid_image_paths.csv` (3,197).
"""

from __future__ import annotations

import pandas as pd

CITATION = ("Rajpurkar P, Irvin J, et al. MURA: Large Dataset for Abnormality Detection in Musculoskeletal "
            "Radiographs. arXiv:1712.06957 (2017), Table 1.")

BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
SPLITS = ("train", "valid")

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
            rows.append({"body_part": part, "split": split, "label": "normal", "studies": normal})
            rows.append({"body_part": part, "split": split, "label": "abnormal", "studies": abnormal})
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
    return pd.DataFrame({"images": images, "studies": studies["normal"] + studies["abnormal"],
                         "normal_studies": studies["normal"], "abnormal_studies": studies["abnormal"]})
