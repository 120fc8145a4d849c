"""MURA v1.1: ``MURA-v1.1/{train,valid}/XR_<PART>/patient<ID>/study<N>_<result>/image<K>.png``.

Indexed from its `{split}_image_paths.csv` files (checked against the folders and against
`{split}_labeled_studies.csv`); the label comes from the study folder's name. Patients and studies
keep MURA's ids (prefixed ``mura:``), so hold-outs can be grouped by patient.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ..body_parts import MURA_BODY_PARTS, XR_NAME_RE  # noqa: F401  (MURA_BODY_PARTS: the parts this layout holds)
from .base import (
    DatasetError,
    IndexProblem,
    Layout,
    empty_table,
    make_table,
    register_layout,
    subdirs,
    to_abs,
    walk_images,
)

MURA_DIR_NAME = "MURA-v1.1"
MURA_SPLITS = ("train", "valid")
_MURA_PREFIX_RE = r"^(?:\./)?MURA-v1\.1/"
_MURA_PART_RE = XR_NAME_RE
_MURA_PATIENT_RE = re.compile(r"patient\d+", re.IGNORECASE)
_MURA_STUDY_RE = re.compile(r"study\d+(?:_(positive|negative))?", re.IGNORECASE)


def _find_mura_dir(root: Path) -> Path | None:
    if root.name == MURA_DIR_NAME:
        return root
    if (root / MURA_DIR_NAME).is_dir():
        return root / MURA_DIR_NAME
    for split in MURA_SPLITS:
        if any(_MURA_PART_RE.fullmatch(d.name) for d in subdirs(root / split)):
            return root
    return None


def parse_mura_path(path: str | os.PathLike) -> dict:
    """Read body part, patient, study and label from a MURA-style path.

    Args:
        path: Any path containing
            ``.../XR_<PART>/patient<ID>/study<N>_<positive|negative>/file``;
            any part may be missing.

    Returns:
        ``{"body_part": "XR_WRIST", "patient": "patient00001",
        "study": "study1_positive", "label": 1}``; missing parts are ``""`` and an
        unknown label is ``None``.
    """
    result: dict = {"body_part": "", "patient": "", "study": "", "label": None}
    for part in re.split(r"[\\/]", str(path)):
        if _MURA_PART_RE.fullmatch(part):
            result["body_part"] = part.upper()
        elif _MURA_PATIENT_RE.fullmatch(part):
            result["patient"] = part
        elif match := _MURA_STUDY_RE.fullmatch(part):
            result["study"] = part
            outcome = match.group(1)
            result["label"] = (
                None if outcome is None else int(outcome.lower() == "positive")
            )
    return result


def _read_mura_csv(path: Path, names: list[str]) -> pd.DataFrame:
    frame = pd.read_csv(
        path, header=None, names=names, dtype=str, keep_default_na=False
    )
    first = frame[names[0]].str.strip().str.replace("\\", "/", regex=False)
    frame[names[0]] = first.str.replace(_MURA_PREFIX_RE, "", regex=True)
    return frame


def _index_mura_split(
    mura_dir: Path, split: str, problems: list[IndexProblem]
) -> pd.DataFrame | None:
    csv = mura_dir / f"{split}_image_paths.csv"
    on_disk = (
        walk_images(mura_dir / split, mura_dir) if (mura_dir / split).is_dir() else []
    )
    if csv.is_file():
        rel = _read_mura_csv(csv, ["rel"])["rel"]
        rel = rel[rel != ""]
        duplicated = rel.duplicated()
        for key in rel[duplicated]:
            problems.append(
                IndexProblem(str(mura_dir / key), f"listed twice in {csv.name}")
            )
        rel = rel[~duplicated]
        exists = rel.isin(set(on_disk))
        for key in rel[~exists]:
            problems.append(
                IndexProblem(
                    str(mura_dir / key),
                    f"listed in {csv.name} but missing; not indexed",
                )
            )
        for key in sorted(set(on_disk) - set(rel)):
            problems.append(
                IndexProblem(
                    str(mura_dir / key), f"image not listed in {csv.name}; not indexed"
                )
            )
        rel = rel[exists]
    elif on_disk:
        rel = pd.Series(on_disk, dtype=object)
    else:
        return None

    pattern = (
        rf"^{split}/(?P<body_part>XR_[A-Za-z]+)/(?P<patient>patient\d+)/"
        r"(?P<study>study\d+_(?P<result>(?i:positive|negative)))/[^/]+$"
    )
    parts = rel.str.extract(pattern)
    bad = parts["result"].isna()
    for key in rel[bad]:
        problems.append(
            IndexProblem(
                str(mura_dir / key),
                f"path does not follow {split}/XR_<PART>/patient<ID>/study<N>_<result>/; "
                "not indexed",
            )
        )
    rel, parts = rel[~bad], parts[~bad]
    study_key = (
        split + "/" + parts["body_part"] + "/" + parts["patient"] + "/" + parts["study"]
    )
    table = make_table(
        path=to_abs(rel, mura_dir).to_numpy(),
        split=split,
        body_part=parts["body_part"].str.upper().to_numpy(),
        patient=("mura:" + parts["patient"]).to_numpy(),
        study=("mura:" + study_key).to_numpy(),
        label=(parts["result"].str.lower() == "positive").astype(int).to_numpy(),
        dataset="mura",
    )
    _check_mura_studies(mura_dir, split, table, problems)
    return table


def _check_mura_studies(
    mura_dir: Path, split: str, table: pd.DataFrame, problems: list[IndexProblem]
) -> None:
    csv = mura_dir / f"{split}_labeled_studies.csv"
    if not csv.is_file():
        return
    listed = _read_mura_csv(csv, ["study", "label"])
    listed = listed[listed["study"] != ""]
    listed["study"] = "mura:" + listed["study"].str.rstrip("/")
    listed["label"] = pd.to_numeric(listed["label"], errors="coerce")
    folder = table.groupby("study", sort=False)["label"].first()
    merged = listed.join(folder.rename("folder_label"), on="study")

    def study_path(study_id: str) -> str:
        return str(mura_dir / study_id.removeprefix("mura:"))

    for study in merged.loc[merged["folder_label"].isna(), "study"]:
        problems.append(
            IndexProblem(study_path(study), f"study in {csv.name} has no images")
        )
    disagree = merged["folder_label"].notna() & (
        merged["label"] != merged["folder_label"]
    )
    for study, label, folder_label in merged.loc[
        disagree, ["study", "label", "folder_label"]
    ].itertuples(index=False):
        problems.append(
            IndexProblem(
                study_path(study),
                f"{csv.name} gives label {label:g}, the folder name gives "
                f"{int(folder_label)}; kept the folder-name label",
            )
        )
    for study in folder.index[~folder.index.isin(set(listed["study"]))]:
        problems.append(
            IndexProblem(study_path(study), f"study not listed in {csv.name}")
        )


def _index_mura(root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
    mura_dir = _find_mura_dir(root)
    if mura_dir is None:
        raise DatasetError(
            f"{root}: no {MURA_DIR_NAME} folder and no train/valid folders "
            "holding XR_* folders"
        )
    problems: list[IndexProblem] = []
    tables = [_index_mura_split(mura_dir, split, problems) for split in MURA_SPLITS]
    tables = [t for t in tables if t is not None]
    table = pd.concat(tables, ignore_index=True) if tables else empty_table()
    return table, problems


@register_layout
class MuraLayout(Layout):
    """MURA v1.1 (the folder itself, its parent, or a copy with train/valid holding XR_* folders)."""

    name = "mura"
    title = "MURA v1.1"
    description = (f"the `{MURA_DIR_NAME}` folder (or its parent), with `train/` and `valid/`, "
                   "`XR_<PART>/patient<ID>/study<N>_<positive|negative>/` and the four CSV files")
    notes = "MURA's distribution: images per body part in train and in valid, normal vs abnormal."
    priority = 30

    def detect(self, root: Path) -> bool:
        return _find_mura_dir(root) is not None

    def index(self, root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
        return _index_mura(root)
