"""Lay real radiographs out as a small MURA v1.1 tree (folders and the four CSV files) for tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from tests.data import FRACATLAS

PARTS = ("XR_WRIST", "XR_HAND", "XR_SHOULDER")


def fracatlas_images(n_positive: int, n_negative: int) -> list[tuple[Path, int]]:
    """The first n fractured and n non-fractured images of the FracAtlas fixture, as (path, label)."""
    table = pd.read_csv(FRACATLAS / "dataset.csv")
    pos = table[table["fractured"] == 1]["image_id"].head(n_positive)
    neg = table[table["fractured"] == 0]["image_id"].head(n_negative)
    return [(FRACATLAS / "images" / i, 1) for i in pos] + [(FRACATLAS / "images" / i, 0) for i in neg]


def make_mura_tree(root: Path, patients_per_split: dict[str, int] | None = None,
                   images_per_study: int = 2) -> Path:
    """Write MURA-v1.1/{train,valid}/XR_<PART>/patientNNNNN/studyK_<positive|negative>/imageI.png.

    Patients alternate normal and abnormal studies; images are real FracAtlas radiographs of the
    matching label (fractured = abnormal). Returns the MURA-v1.1 folder.
    """
    patients_per_split = patients_per_split or {"train": 12, "valid": 6}
    needed = (sum(patients_per_split.values()) + 1) // 2 * images_per_study  # per label
    pool = {1: [p for p, y in fracatlas_images(needed, 0)], 0: [p for p, y in fracatlas_images(0, needed)]}
    if min(len(pool[0]), len(pool[1])) < needed:
        raise ValueError(f"the FracAtlas fixture holds fewer than {needed} images of each label")
    mura = root / "MURA-v1.1"
    patient_id, used = 0, {0: 0, 1: 0}
    for split, n_patients in patients_per_split.items():
        image_rows, study_rows = [], []
        for k in range(n_patients):
            patient_id += 1
            label = k % 2
            part = PARTS[k % len(PARTS)]
            study = f"study1_{'positive' if label else 'negative'}"
            rel = f"MURA-v1.1/{split}/{part}/patient{patient_id:05d}/{study}/"
            (root / rel).mkdir(parents=True)
            for i in range(images_per_study):
                from PIL import Image

                Image.open(pool[label][used[label]]).convert("L").save(root / rel / f"image{i + 1}.png")
                used[label] += 1
                image_rows.append(rel + f"image{i + 1}.png")
            study_rows.append((rel, label))
        pd.DataFrame(image_rows).to_csv(mura / f"{split}_image_paths.csv", header=False, index=False)
        pd.DataFrame(study_rows).to_csv(mura / f"{split}_labeled_studies.csv", header=False, index=False)
    return mura


def copy_images(dest: Path, images: list[tuple[Path, int]]) -> list[Path]:
    """Copy images into `dest`, returning the new paths."""
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, dest / p.name)) for p, _ in images]
