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


def make_identical_mura_tree(root: Path, share: float = 1.0, side: int = 256, other_bytes: bool = False) -> Path:
    """Write a MURA v1.1 tree with the published layout and counts (`mura_facts`: images and normal and
    abnormal studies per body part and split, 40,005 images at ``share`` 1) whose every image is the same
    blank placeholder PNG, byte for byte: what a copied tree of blank files looks like to the leakage check.

    Args:
        root: the folder to write ``MURA-v1.1`` into.
        share: the share of the published counts to write (each body part, split and label keeps at least
            one study of one image).
        side: the placeholder's width and height in pixels.
        other_bytes: give each file its own bytes (a PNG text chunk with its name) around the same picture.

    Returns:
        The MURA-v1.1 folder.
    """
    import io

    from PIL import Image, PngImagePlugin

    from mura_core import mura_facts

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "PNG")
    placeholder = buffer.getvalue()
    studies = mura_facts.published_studies().set_index(["body_part", "split", "label"])["studies"]
    images = mura_facts.published_images().set_index(["body_part", "split"])["images"]
    mura = root / "MURA-v1.1"
    patient_id = 0
    for split in mura_facts.SPLITS:
        image_rows, study_rows = [], []
        for part in mura_facts.BODY_PARTS:
            counts = [max(1, round(share * studies[(part, split, mura_facts.LABEL_NAMES[y])])) for y in (0, 1)]
            n_images = max(sum(counts), round(share * images[(part, split)]))
            labels = [0] * counts[0] + [1] * counts[1]
            for k, label in enumerate(labels):
                patient_id += 1
                rel = f"MURA-v1.1/{split}/{part}/patient{patient_id:05d}/study1_{'positive' if label else 'negative'}/"
                (root / rel).mkdir(parents=True)
                # the study's share of the part's images, spread as evenly as whole numbers allow
                for i in range(n_images * (k + 1) // len(labels) - n_images * k // len(labels)):
                    if other_bytes:
                        note = PngImagePlugin.PngInfo()
                        note.add_text("file", rel + f"image{i + 1}.png")
                        Image.new("L", (side, side), 128).save(root / rel / f"image{i + 1}.png", pnginfo=note)
                    else:
                        (root / rel / f"image{i + 1}.png").write_bytes(placeholder)
                    image_rows.append(rel + f"image{i + 1}.png")
                study_rows.append((rel, label))
        pd.DataFrame(image_rows).to_csv(mura / f"{split}_image_paths.csv", header=False, index=False)
        pd.DataFrame(study_rows).to_csv(mura / f"{split}_labeled_studies.csv", header=False, index=False)
    return mura
