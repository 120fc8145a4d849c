"""Tests for mura_core.datasets: tiny trees in tmp_path and the FracAtlas fixture."""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mura_core.datasets import (
    COLUMNS,
    DatasetError,
    combine,
    detect_format,
    index_dataset,
    load_fracatlas_boxes,
    parse_mura_path,
    split_by_patient,
    summarize,
    write_split_file,
)
from tests.data import FRACATLAS, FRACATLAS_FULL

# (split, part, patient, study folder, number of images)
MURA_STUDIES = [
    ("train", "XR_SHOULDER", "patient00001", "study1_positive", 2),
    ("train", "XR_WRIST", "patient00001", "study1_negative", 1),
    ("train", "XR_SHOULDER", "patient00002", "study1_negative", 2),
    ("train", "XR_HAND", "patient00003", "study1_positive", 1),
    ("train", "XR_HAND", "patient00003", "study2_negative", 1),
    ("train", "XR_ELBOW", "patient00004", "study1_negative", 1),
    ("train", "XR_FINGER", "patient00005", "study1_positive", 1),
    ("train", "XR_FOREARM", "patient00006", "study1_positive", 1),
    ("train", "XR_HUMERUS", "patient00007", "study1_negative", 2),
    ("valid", "XR_WRIST", "patient11001", "study1_positive", 1),
    ("valid", "XR_WRIST", "patient11002", "study1_negative", 2),
    # As in real MURA: one patient, one body part, study1 both negative and positive (two study folders).
    ("valid", "XR_WRIST", "patient11002", "study1_positive", 1),
]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=128).save(path)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def mura_root(tmp_path: Path) -> Path:
    """A tiny MURA v1.1 copy (with its four CSVs) inside tmp_path/data."""
    mura = tmp_path / "data" / "MURA-v1.1"
    images = {"train": [], "valid": []}
    studies = {"train": [], "valid": []}
    for split, part, patient, study, n in MURA_STUDIES:
        folder = f"{split}/{part}/{patient}/{study}"
        for k in range(1, n + 1):
            _png(mura / folder / f"image{k}.png")
            images[split].append(f"MURA-v1.1/{folder}/image{k}.png")
        studies[split].append(f"MURA-v1.1/{folder}/,{int(study.endswith('positive'))}")
    for split in ("train", "valid"):
        _write_lines(mura / f"{split}_image_paths.csv", images[split])
        _write_lines(mura / f"{split}_labeled_studies.csv", studies[split])
    return tmp_path / "data"


def test_mura_counts_labels_and_ids(mura_root: Path) -> None:
    index = index_dataset(mura_root)
    table = index.table
    assert index.format == "mura"
    assert index.problems == []
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 16
    assert (table["split"] == "train").sum() == 12
    assert table.groupby("split")["study"].nunique().to_dict() == {
        "train": 9,
        "valid": 3,
    }
    assert table.groupby("split")["patient"].nunique().to_dict() == {
        "train": 7,
        "valid": 2,
    }
    assert table["label"].sum() == 7
    assert set(table["dataset"]) == {"mura"}

    row = table[
        table["path"].str.endswith("patient00001/study1_positive/image2.png")
    ].iloc[0]
    assert Path(row["path"]).is_absolute() and Path(row["path"]).is_file()
    assert row["body_part"] == "XR_SHOULDER"
    assert row["patient"] == "mura:patient00001"
    assert row["study"] == "mura:train/XR_SHOULDER/patient00001/study1_positive"
    assert row["label"] == 1
    # One patient, two body parts: one patient id, two study ids.
    p1 = table[table["patient"] == "mura:patient00001"]
    assert p1["study"].nunique() == 2


def test_summarize_counts_per_split_and_body_part(mura_root: Path) -> None:
    per_split, per_part = summarize(index_dataset(mura_root).table)
    assert per_split.loc["valid"].to_dict() == {"images": 4, "studies": 3, "patients": 2, "normal": 2, "abnormal": 2}
    assert per_split.loc["train"].to_dict() == {"images": 12, "studies": 9, "patients": 7, "normal": 7, "abnormal": 5}
    assert per_part.loc["XR_WRIST"].to_dict() == {"train": 1, "valid": 4}
    assert per_part.loc["XR_SHOULDER"].to_dict() == {"train": 4, "valid": 0}


def test_mura_root_as_mura_folder_and_tree_walk(mura_root: Path) -> None:
    from_parent = index_dataset(mura_root).table
    from_folder = index_dataset(mura_root / "MURA-v1.1").table
    pd.testing.assert_frame_equal(from_parent, from_folder)
    assert detect_format(mura_root / "MURA-v1.1") == "mura"

    # Without the image lists the tree is walked; hidden AppleDouble files are skipped.
    for split in ("train", "valid"):
        (mura_root / "MURA-v1.1" / f"{split}_image_paths.csv").unlink()
    (
        mura_root / "MURA-v1.1/train/XR_WRIST/patient00001/study1_negative/._image1.png"
    ).write_bytes(b"\0" * 16)
    walked = index_dataset(mura_root)
    assert walked.problems == []
    assert sorted(walked.table["path"]) == sorted(from_parent["path"])
    assert not walked.table["path"].str.contains("/._").any()


def test_mura_problems_are_reported(mura_root: Path) -> None:
    mura = mura_root / "MURA-v1.1"
    with open(mura / "train_image_paths.csv", "a") as f:
        f.write("MURA-v1.1/train/XR_HAND/patient00003/study1_positive/image9.png\n")
    labeled = (mura / "train_labeled_studies.csv").read_text()
    labeled = labeled.replace(
        "patient00002/study1_negative/,0", "patient00002/study1_negative/,1"
    )
    labeled += "MURA-v1.1/train/XR_HAND/patient00099/study1_positive/,1\n"
    (mura / "train_labeled_studies.csv").write_text(labeled)
    _png(mura / "train/XR_HAND/patient00003/study1_positive/._image1.png")

    index = index_dataset(mura_root)
    reasons = {
        Path(p.path).relative_to(mura).as_posix(): p.reason for p in index.problems
    }
    assert len(index.problems) == 3, index.problems
    assert "missing" in reasons["train/XR_HAND/patient00003/study1_positive/image9.png"]
    assert (
        "kept the folder-name label"
        in reasons["train/XR_SHOULDER/patient00002/study1_negative"]
    )
    assert "no images" in reasons["train/XR_HAND/patient00099/study1_positive"]
    # The folder-name label is kept, the missing file is not indexed.
    assert len(index.table) == 16
    assert set(
        index.table.loc[index.table["patient"] == "mura:patient00002", "label"]
    ) == {0}


def test_parse_mura_path() -> None:
    parsed = parse_mura_path(
        "/x/MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png"
    )
    assert parsed == {
        "body_part": "XR_WRIST",
        "patient": "patient11185",
        "study": "study1_positive",
        "label": 1,
    }
    assert parse_mura_path("uploads/xr_elbow/scan.png") == {
        "body_part": "XR_ELBOW",
        "patient": "",
        "study": "",
        "label": None,
    }
    assert parse_mura_path(r"C:\d\patient1\study2_negative\a.png")["label"] == 0


def test_split_by_patient_is_grouped_and_deterministic(mura_root: Path) -> None:
    table = index_dataset(mura_root).table
    kept, held = split_by_patient(table, 0.5, seed=3)
    assert len(kept) + len(held) == len(table) and len(held) > 0 and len(kept) > 0
    assert not set(kept["patient"]) & set(held["patient"])
    assert list(kept.index) == list(range(len(kept)))
    again_kept, again_held = split_by_patient(table, 0.5, seed=3)
    pd.testing.assert_frame_equal(held, again_held)
    pd.testing.assert_frame_equal(kept, again_kept)
    with pytest.raises(ValueError):
        split_by_patient(table, 1.5)


def _folders_tree(root: Path, splits: list[str], classes: list[str]) -> None:
    for split in splits:
        for k, name in enumerate(classes):
            for i in range(k + 2):
                _png(root / split / name / f"img{i}.jpg")


def test_folders_with_and_without_splits(tmp_path: Path) -> None:
    with_splits = tmp_path / "bones"
    _folders_tree(
        with_splits, ["train", "validation", "test"], ["fractured", "not fractured"]
    )
    index = index_dataset(with_splits)
    assert index.format == "folders" and index.problems == []
    assert len(index.table) == 15
    assert set(index.table["split"]) == {"train", "val", "test"}
    assert index.table["label"].sum() == 6
    assert "folders:validation/not fractured/img0" in set(index.table["study"])
    assert set(index.table["patient"]) == {""}

    flat = tmp_path / "flat"
    _folders_tree(flat, [""], ["Normal", "ABNORMAL"])
    table = index_dataset(flat).table
    assert set(table["split"]) == {""}
    assert table.loc[table["path"].str.contains("ABNORMAL"), "label"].tolist() == [
        1,
        1,
        1,
    ]
    assert len(table) == 5

    both = combine([index_dataset(flat), index])
    assert both.format == "combined" and len(both.table) == 20
    assert tuple(both.table.columns) == COLUMNS


def test_unknown_class_and_unusable_roots(tmp_path: Path) -> None:
    root = tmp_path / "bones"
    _folders_tree(root, ["train"], ["fractured", "maybe"])
    with pytest.raises(DatasetError, match="maybe"):
        index_dataset(root)
    with pytest.raises(DatasetError, match="does not exist"):
        index_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        detect_format(tmp_path / "empty")
    _png(tmp_path / "odd" / "stuff" / "a.png")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        detect_format(tmp_path / "odd")


def test_split_file_round_trip(mura_root: Path, tmp_path: Path) -> None:
    index = index_dataset(mura_root)
    kept, held = split_by_patient(index.table, 0.5, seed=0)
    assigned = pd.concat([kept.assign(split="train"), held.assign(split="holdout")])
    split_file = write_split_file(assigned, mura_root, tmp_path / "splits.csv")
    saved = pd.read_csv(split_file)
    assert list(saved.columns) == ["path_key", "split"]
    assert saved["path_key"].is_monotonic_increasing
    assert saved["path_key"].str.startswith("MURA-v1.1/").all()

    with open(split_file, "a") as f:
        f.write(
            "MURA-v1.1/train/XR_HAND/patient09999/study1_negative/image1.png,train\n"
        )
    restored = index_dataset(mura_root, split_file=split_file)
    by_path = assigned.set_index("path")["split"]
    assert (restored.table["split"] == restored.table["path"].map(by_path)).all()
    assert [p.reason for p in restored.problems] == [
        "in splits.csv but not in the dataset"
    ]


def test_real_fracatlas() -> None:
    """The committed fixture; the full copy as well when it is beside the repository."""
    for root in (FRACATLAS, FRACATLAS_FULL) if FRACATLAS_FULL.is_dir() else (FRACATLAS,):
        _check_real_fracatlas(root)


def _check_real_fracatlas(root: Path) -> None:
    assert detect_format(root) == "fracatlas"
    index = index_dataset(root)
    table = index.table
    assert index.problems == []
    csv = pd.read_csv(root / "dataset.csv")
    assert len(table) == len(csv) and table["label"].sum() == csv["fractured"].sum() > 0
    assert (
        table["study"].is_unique
        and table["study"].str.startswith("fracatlas:IMG").all()
    )
    assert set(table["body_part"]) <= {"HAND", "LEG", "HIP", "SHOULDER", "MIXED"}
    assert set(table["split"]) == {""} and set(table["patient"]) == {""}

    boxes = load_fracatlas_boxes(root)
    fractured = table.loc[table["label"] == 1, "path"].map(lambda p: Path(p).name)
    assert all(boxes.get(name) for name in fractured)
    _, _, w, h = boxes[fractured.iloc[0]][0]
    assert w > 0 and h > 0


def test_fracatlas_layout_flags_and_missing_image(tmp_path: Path) -> None:
    root = tmp_path / "fracatlas"
    header = "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,"
    rows = [
        "IMG0000001.jpg,1,0,0,0,0,0,0,1,1,1,0,0",
        "IMG0000002.jpg,0,1,1,0,0,0,0,0,0,1,0,0",
        "IMG0000003.jpg,0,0,0,1,0,0,0,0,0,1,0,0",
    ]
    root.mkdir()
    _write_lines(
        root / "dataset.csv", [header + "fracture_count,frontal,lateral,oblique", *rows]
    )
    _png(root / "images" / "IMG0000001.jpg")
    _png(root / "images" / "IMG0000002.jpg")
    index = index_dataset(root)
    assert index.format == "fracatlas"
    assert index.table["body_part"].tolist() == ["HAND", "MIXED"]
    assert index.table["study"].tolist() == [
        "fracatlas:IMG0000001",
        "fracatlas:IMG0000002",
    ]
    assert index.table["label"].tolist() == [1, 0]
    assert [Path(p.path).name for p in index.problems] == ["IMG0000003.jpg"]
