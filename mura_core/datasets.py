"""Index radiograph datasets into one table of images, labels and patient/study ids.

Three layouts are understood:

* ``mura``: MURA v1.1
  (``MURA-v1.1/{train,valid}/XR_<PART>/patient<ID>/study<N>_<result>/``
  plus its four CSV files).
* ``fracatlas``: FracAtlas (``dataset.csv``, ``images/``, COCO ``annotations.json``).
* ``folders``: one folder per class, optionally under split folders
  (``ROOT/{train,val,test}/{fractured,not fractured}/*.jpg``).

Every index is a :class:`DatasetIndex` whose table has the columns in :data:`COLUMNS`.
Inconsistencies in a dataset are collected as :class:`IndexProblem` records instead of
being dropped silently; a root that cannot be used at all raises :class:`DatasetError`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS: tuple[str, ...] = (
    "path",
    "split",
    "body_part",
    "patient",
    "study",
    "label",
    "dataset",
)
MURA_BODY_PARTS = (
    "XR_ELBOW",
    "XR_FINGER",
    "XR_FOREARM",
    "XR_HAND",
    "XR_HUMERUS",
    "XR_SHOULDER",
    "XR_WRIST",
)
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
FORMATS = ("mura", "fracatlas", "folders")

MURA_DIR_NAME = "MURA-v1.1"
MURA_SPLITS = ("train", "valid")
FRACATLAS_PARTS = ("hand", "leg", "hip", "shoulder")
FRACATLAS_REQUIRED = ("image_id", *FRACATLAS_PARTS, "mixed", "fractured")
POSITIVE_CLASSES = frozenset({"fractured", "abnormal", "positive", "1"})
NEGATIVE_CLASSES = frozenset(
    {"not fractured", "not_fractured", "normal", "negative", "0"}
)
SPLIT_ALIASES = {"validation": "val"}

# Folders that operating systems and archivers leave behind; never part of a dataset.
_IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
_MURA_PREFIX_RE = r"^(?:\./)?MURA-v1\.1/"
_MURA_PART_RE = re.compile(r"XR_[A-Za-z]+", re.IGNORECASE)
_MURA_PATIENT_RE = re.compile(r"patient\d+", re.IGNORECASE)
_MURA_STUDY_RE = re.compile(r"study\d+(?:_(positive|negative))?", re.IGNORECASE)


class DatasetError(ValueError):
    """A dataset root that cannot be indexed (missing, empty or of unknown layout)."""


@dataclass(frozen=True)
class IndexProblem:
    """One inconsistency found while indexing.

    Attributes:
        path: The file, folder or study the problem is about.
        reason: What is wrong and what the index did about it.
    """

    path: str
    reason: str


@dataclass
class DatasetIndex:
    """The images of one dataset (or several, see :func:`combine`).

    Attributes:
        table: One row per image with the columns in :data:`COLUMNS`.
        problems: Inconsistencies found while indexing.
        format: ``"mura"``, ``"fracatlas"``, ``"folders"`` or ``"combined"``.
    """

    table: pd.DataFrame
    problems: list[IndexProblem] = field(default_factory=list)
    format: str = ""


# --- helpers


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in _IGNORED_NAMES


def _is_image(name: str) -> bool:
    return _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p.name))
    except OSError:
        return []


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: dataset root does not exist")
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset root is not a folder")
    path = path.resolve()
    if not any(_visible(p.name) for p in path.iterdir()):
        raise DatasetError(f"{path}: dataset root is empty")
    return path


def _empty_table() -> pd.DataFrame:
    table = pd.DataFrame({c: pd.Series([], dtype=object) for c in COLUMNS})
    table["label"] = table["label"].astype("int64")
    return table


def _make_table(**columns) -> pd.DataFrame:
    n = len(columns["path"])
    data = {}
    for name in COLUMNS:
        value = columns.get(name, "")
        if isinstance(value, str):
            value = [value] * n
        data[name] = np.asarray(value, dtype=object)
    table = pd.DataFrame(data, columns=list(COLUMNS))
    table["label"] = table["label"].astype("int64")
    return table


def _class_label(name: str) -> int | None:
    key = name.strip().lower()
    if key in POSITIVE_CLASSES:
        return 1
    if key in NEGATIVE_CLASSES:
        return 0
    return None


def _relative_keys(paths: pd.Series, root: Path) -> pd.Series:
    """Paths relative to ``root`` as posix strings; ValueError for paths outside it."""
    prefix = str(root).rstrip(os.sep) + os.sep
    paths = paths.astype(str)
    outside = ~paths.str.startswith(prefix)
    if outside.any():
        raise ValueError(f"{paths[outside].iloc[0]} is not under {root}")
    keys = paths.str.slice(len(prefix))
    return keys.str.replace(os.sep, "/", regex=False) if os.sep != "/" else keys


# --- detection


def _find_mura_dir(root: Path) -> Path | None:
    if root.name == MURA_DIR_NAME:
        return root
    if (root / MURA_DIR_NAME).is_dir():
        return root / MURA_DIR_NAME
    for split in MURA_SPLITS:
        if any(_MURA_PART_RE.fullmatch(d.name) for d in _subdirs(root / split)):
            return root
    return None


def _is_fracatlas(root: Path) -> bool:
    csv = root / "dataset.csv"
    if not (csv.is_file() and (root / "images").is_dir()):
        return False
    try:
        header = pd.read_csv(csv, nrows=0).columns
    except (ValueError, OSError):
        return False
    return "image_id" in header and "fractured" in header


def _has_class_folders(root: Path) -> bool:
    for folder in _subdirs(root):
        if _class_label(folder.name) is not None:
            return True
        if any(_class_label(d.name) is not None for d in _subdirs(folder)):
            return True
    return False


def detect_format(root: str | os.PathLike) -> str:
    """Tell which layout a dataset folder has.

    Args:
        root: The dataset folder.

    Returns:
        ``"mura"``, ``"fracatlas"`` or ``"folders"``.

    Raises:
        DatasetError: If the root is missing or empty, or no known layout matches.
    """
    path = _check_root(root)
    if _find_mura_dir(path) is not None:
        return "mura"
    if _is_fracatlas(path):
        return "fracatlas"
    if _has_class_folders(path):
        return "folders"
    classes = sorted(POSITIVE_CLASSES | NEGATIVE_CLASSES)
    raise DatasetError(
        f"{path}: unknown dataset layout; looked for a {MURA_DIR_NAME} folder (or "
        "train/valid folders holding XR_* folders), a FracAtlas dataset.csv with "
        "image_id and fractured "
        f"columns beside an images/ folder, and class folders named one of {classes} "
        "(directly or inside split folders)"
    )


# --- MURA


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


def _walk_images(folder: Path, base: Path) -> list[str]:
    """Non-hidden image files under ``folder``, as posix paths relative to ``base``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        rel = os.path.relpath(dirpath, base).replace(os.sep, "/")
        found.extend(f"{rel}/{name}" for name in filenames if _is_image(name))
    return sorted(found)


def _read_mura_csv(path: Path, names: list[str]) -> pd.DataFrame:
    frame = pd.read_csv(
        path, header=None, names=names, dtype=str, keep_default_na=False
    )
    first = frame[names[0]].str.strip().str.replace("\\", "/", regex=False)
    frame[names[0]] = first.str.replace(_MURA_PREFIX_RE, "", regex=True)
    return frame


def _to_abs(rel: pd.Series, base: Path) -> pd.Series:
    if os.sep != "/":
        rel = rel.str.replace("/", os.sep, regex=False)
    return str(base) + os.sep + rel


def _index_mura_split(
    mura_dir: Path, split: str, problems: list[IndexProblem]
) -> pd.DataFrame | None:
    csv = mura_dir / f"{split}_image_paths.csv"
    on_disk = (
        _walk_images(mura_dir / split, mura_dir) if (mura_dir / split).is_dir() else []
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
    table = _make_table(
        path=_to_abs(rel, mura_dir).to_numpy(),
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
    table = pd.concat(tables, ignore_index=True) if tables else _empty_table()
    return table, problems


# --- FracAtlas


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
    for rel in _walk_images(root / "images", root):
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
    table = _make_table(
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
) -> dict[str, list[tuple[float, float, float, float]]]:
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
    boxes: dict[str, list[tuple[float, float, float, float]]] = {
        n: [] for n in names.values()
    }
    for annotation in coco.get("annotations", []):
        name = names.get(annotation.get("image_id"))
        bbox = annotation.get("bbox")
        if name is not None and bbox and len(bbox) == 4:
            boxes[name].append(tuple(float(v) for v in bbox))
    return boxes


# --- class folders


def _index_folders(root: Path) -> tuple[pd.DataFrame, list[IndexProblem]]:
    problems: list[IndexProblem] = []
    subdirs = _subdirs(root)
    if any(_class_label(d.name) is not None for d in subdirs):
        units = [("", root)]
    else:
        units = [
            (SPLIT_ALIASES.get(d.name.lower(), d.name.lower()), d) for d in subdirs
        ]
    rels: list[str] = []
    splits: list[str] = []
    labels: list[int] = []
    for split, base in units:
        for name in sorted(os.listdir(base)):
            if (base / name).is_file() and _is_image(name):
                problems.append(
                    IndexProblem(
                        str(base / name), "image outside a class folder; not indexed"
                    )
                )
        for folder in _subdirs(base):
            label = _class_label(folder.name)
            if label is None:
                known = sorted(POSITIVE_CLASSES | NEGATIVE_CLASSES)
                raise DatasetError(
                    f"{folder}: unknown class folder {folder.name!r}; "
                    f"expected one of {known}"
                )
            found = _walk_images(folder, root)
            rels.extend(found)
            splits.extend([split] * len(found))
            labels.extend([label] * len(found))
    rel = pd.Series(rels, dtype=object)
    table = _make_table(
        path=_to_abs(rel, root).to_numpy(),
        split=splits,
        study=("folders:" + rel.str.replace(r"\.[^./]*$", "", regex=True)).to_numpy(),
        label=labels,
        dataset="folders",
    )
    return table, problems


# --- public API


_INDEXERS = {
    "mura": _index_mura,
    "fracatlas": _index_fracatlas,
    "folders": _index_folders,
}


def index_dataset(
    root: str | os.PathLike,
    format: str = "auto",
    split_file: str | os.PathLike | None = None,
) -> DatasetIndex:
    """Index every image of a dataset folder.

    Args:
        root: The dataset folder (for MURA, the ``MURA-v1.1`` folder or its parent).
        format: ``"auto"`` (see :func:`detect_format`), ``"mura"``, ``"fracatlas"``
            or ``"folders"``.
        split_file: Optional CSV with columns ``path_key,split`` (paths relative to
            ``root``, posix) that sets the ``split`` column; see
            :func:`write_split_file`.

    Returns:
        The index: a table with the columns in :data:`COLUMNS`, the problems found
        and the format.

    Raises:
        DatasetError: If the root is missing, empty, of unknown layout or holds no
            images.
        ValueError: If ``format`` is not a known name.
    """
    if format != "auto" and format not in _INDEXERS:
        raise ValueError(
            f"unknown dataset format {format!r}; expected 'auto' or one of {list(FORMATS)}"
        )
    path = _check_root(root)
    fmt = detect_format(path) if format == "auto" else format
    table, problems = _INDEXERS[fmt](path)
    if table.empty:
        detail = (
            f"; first problem: {problems[0].path}: {problems[0].reason}"
            if problems
            else ""
        )
        raise DatasetError(f"{path}: no images found in the {fmt} layout{detail}")
    if split_file is not None:
        table, split_problems = _apply_split_file(table, path, Path(split_file))
        problems.extend(split_problems)
    return DatasetIndex(
        table=table.reset_index(drop=True), problems=problems, format=fmt
    )


def combine(indexes: Sequence[DatasetIndex]) -> DatasetIndex:
    """Join several indexes into one.

    Study and patient ids carry a dataset prefix, so they stay unique across datasets.

    Args:
        indexes: The indexes to join, in order.

    Returns:
        One index with the tables concatenated (fresh index), all problems and format
        ``"combined"``; an image path present more than once is reported as a problem.
    """
    tables = [index.table.loc[:, list(COLUMNS)] for index in indexes]
    table = pd.concat(tables, ignore_index=True) if tables else _empty_table()
    problems = [problem for index in indexes for problem in index.problems]
    for path in table.loc[table["path"].duplicated(), "path"].unique():
        problems.append(
            IndexProblem(path, "image appears in more than one of the combined indexes")
        )
    return DatasetIndex(table=table, problems=problems, format="combined")


def summarize(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts to check an index against a dataset's published figures.

    Args:
        table: An index table (columns of ``COLUMNS``).

    Returns:
        ``(per_split, per_body_part)``: per split, the images, distinct study ids,
        distinct patient ids (0 where the layout has none), normal and abnormal
        images; and the images per body part (rows) and split (columns). A missing
        split shows as ``"-"``.
    """
    data = table.assign(split=table["split"].replace("", "-"))
    patients = data["patient"].where(data["patient"] != "")
    per_split = pd.DataFrame({
        "images": data.groupby("split").size(),
        "studies": data.groupby("split")["study"].nunique(),
        "patients": patients.groupby(data["split"]).nunique(),
        "normal": (data["label"] == 0).groupby(data["split"]).sum(),
        "abnormal": (data["label"] == 1).groupby(data["split"]).sum(),
    })
    per_part = data.pivot_table(index="body_part", columns="split", values="path",
                                aggfunc="count", fill_value=0)
    per_part.columns.name = None
    return per_split, per_part


def split_by_patient(
    table: pd.DataFrame, fraction: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out about ``fraction`` of the rows, keeping each patient on one side.

    Rows are grouped by patient, rows without a patient by study, rows with neither by
    image. The groups are stratified by label with ``StratifiedGroupKFold`` and its
    first fold is held out.

    Args:
        table: A table with the columns in :data:`COLUMNS`.
        fraction: Share of rows to hold out, in (0, 1); the fold count is
            ``max(2, round(1 / fraction))``.
        seed: Random state of the shuffle; the same seed gives the same split.

    Returns:
        ``(kept, held_out)``, both with a fresh index.

    Raises:
        ValueError: If ``fraction`` is outside (0, 1) or there are fewer groups than
            folds.
    """
    # Imported here: scikit-learn is slow to import and only this function needs it.
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_splits = max(2, round(1 / fraction))
    patient = table["patient"].astype(str)
    study = table["study"].astype(str)
    groups = np.where(
        patient != "",
        "p:" + patient,
        np.where(study != "", "s:" + study, "i:" + table["path"].astype(str)),
    )
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise ValueError(
            f"{n_groups} patient/study groups cannot be split into {n_splits} folds"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    kept_idx, held_idx = next(
        folds.split(np.zeros(len(table)), table["label"].to_numpy(), groups)
    )
    return (
        table.iloc[np.sort(kept_idx)].reset_index(drop=True),
        table.iloc[np.sort(held_idx)].reset_index(drop=True),
    )


def write_split_file(
    table: pd.DataFrame, root: str | os.PathLike, path: str | os.PathLike
) -> Path:
    """Save the ``split`` column of a table for :func:`index_dataset` to restore.

    Args:
        table: A table with ``path`` and ``split`` columns; every path must lie under
            ``root``.
        root: The dataset folder the keys are relative to (as given to
            :func:`index_dataset`).
        path: Where to write the CSV (columns ``path_key,split``, sorted by key).

    Returns:
        The path written.

    Raises:
        ValueError: If a path in the table is not under ``root``.
    """
    keys = _relative_keys(table["path"], Path(root).expanduser().resolve())
    out = pd.DataFrame(
        {"path_key": keys.to_numpy(), "split": table["split"].astype(str).to_numpy()}
    )
    out = out.sort_values("path_key", kind="stable")
    path = Path(path)
    out.to_csv(path, index=False)
    return path


def _apply_split_file(
    table: pd.DataFrame, root: Path, split_file: Path
) -> tuple[pd.DataFrame, list[IndexProblem]]:
    splits = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    missing = [c for c in ("path_key", "split") if c not in splits.columns]
    if missing:
        raise ValueError(f"{split_file}: split file lacks columns {missing}")
    problems: list[IndexProblem] = []
    duplicated = splits["path_key"].duplicated()
    for key in splits.loc[duplicated, "path_key"].unique():
        problems.append(
            IndexProblem(
                str(root / key),
                f"listed more than once in {split_file.name}; kept the first",
            )
        )
    mapping = splits[~duplicated].set_index("path_key")["split"]
    keys = _relative_keys(table["path"], root)
    known = set(keys)
    for key in (k for k in mapping.index if k not in known):
        problems.append(
            IndexProblem(
                str(root / key), f"in {split_file.name} but not in the dataset"
            )
        )
    table = table.copy()
    table["split"] = keys.map(mapping).fillna("").to_numpy(dtype=object)
    return table, problems
