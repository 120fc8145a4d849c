"""The installed ensemble's folder: where it lives, its manifest, its report and its sample studies.

Light on purpose (no TensorFlow): the dashboard's pages, the CLI and `train/` resolve the folder
here, so they always agree on which ensemble is meant. `Ensemble.save` writes what this reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .body_parts import body_part_label, normalize_body_part

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
"""The repository's `weights/` folder: the bundled ensemble."""
WEIGHTS_ENV = "MURA_WEIGHTS"
MANIFEST = "manifest.json"
REPORT_FILE = "report.json"
REPORT_FOLDER = "report"
MODEL_CARD_FILE = "MODEL_CARD.md"
"""File names in a weights folder: the manifest, `report/report.json` (`train.evaluate`) and the card."""
MANIFEST_FORMAT = "mura_core.ensemble/1"
SAMPLE_COLUMNS = ("file", "study", "label", "body_part", "attribution", "boxes")
"""Columns of `samples/samples.csv`; `boxes` (optional) holds reference lesion boxes as JSON
[[x, y, w, h], ...] in the sample image's pixels."""


class EnsembleLoadError(RuntimeError):
    """The ensemble folder or one of its files cannot be used; the message names the file."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_folder(folder: str | os.PathLike | None = None) -> Path:
    """The ensemble folder meant: `folder` when given, else `$MURA_WEIGHTS`, else the bundled `weights/`."""
    return Path(folder or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)


def weights_installed(folder: str | os.PathLike | None = None) -> bool:
    """Whether an ensemble manifest is present in `weights_folder(folder)`."""
    return (weights_folder(folder) / MANIFEST).is_file()


def read_manifest(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The parsed manifest of an ensemble folder (default: `weights_folder()`).

    Raises:
        EnsembleLoadError: no manifest, unreadable, of another format or without members.
    """
    path = weights_folder(folder) / MANIFEST
    if not path.is_file():
        raise EnsembleLoadError(f"{path}: no ensemble manifest here (is the folder an installed ensemble?)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnsembleLoadError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise EnsembleLoadError(f"{path}: not a {MANIFEST_FORMAT} manifest")
    if not manifest.get("members"):
        raise EnsembleLoadError(f"{path}: the manifest lists no members")
    return manifest


def folder_stamp(folder: str | os.PathLike) -> str:
    """A key that changes when the ensemble in `folder` is replaced (manifest path + mtime)."""
    manifest = Path(folder) / MANIFEST
    try:
        return f"{manifest.resolve()}:{manifest.stat().st_mtime_ns}"
    except OSError:
        return f"{manifest}:missing"


def report_path(folder: str | os.PathLike) -> Path:
    """The evaluation report installed with an ensemble: `report.json` or `report/report.json`."""
    for candidate in (Path(folder) / REPORT_FILE, Path(folder) / REPORT_FOLDER / REPORT_FILE):
        if candidate.is_file():
            return candidate
    return Path(folder) / REPORT_FOLDER / REPORT_FILE


def read_samples(folder: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Read `samples/samples.csv` of a weights folder.

    Args:
        folder: the weights folder.

    Returns:
        The rows whose image file exists, with an absolute `path` column added (columns
        file, study, label, body_part, attribution, path), and a list of problems (missing
        columns or files). No samples folder gives an empty table and no problem.
    """
    samples = Path(folder) / "samples"
    csv = samples / "samples.csv"
    empty = pd.DataFrame(columns=[*SAMPLE_COLUMNS, "path"])
    if not csv.is_file():
        return empty, []
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        return empty, [f"{csv}: unreadable ({exc})"]
    missing = [c for c in ("file", "study") if c not in table.columns]
    if missing:
        return empty, [f"{csv}: missing column(s) {', '.join(missing)}"]
    for column in SAMPLE_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    problems = []
    paths = []
    for name in table["file"]:
        path = samples / name
        if Path(name).name != name:
            problems.append(f"{name}: sample files must lie in {samples}; skipped")
            paths.append(None)
        elif not path.is_file():
            problems.append(f"{path}: listed in samples.csv but missing")
            paths.append(None)
        else:
            paths.append(str(path))
    table["path"] = paths
    table = table[table["path"].notna()].reset_index(drop=True)
    return table.loc[:, [*SAMPLE_COLUMNS, "path"]], problems


def sample_studies(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per sample study: study, n_images, label, body_part, attribution, description.

    The description names the study, its body part and image count, not its label (a teaching
    demo should not give the answer away before the models do).
    """
    if samples.empty:
        return pd.DataFrame(columns=["study", "n_images", "label", "body_part", "attribution", "description"])
    grouped = samples.groupby("study", sort=False).agg(
        n_images=("file", "size"), label=("label", "first"), body_part=("body_part", "first"),
        attribution=("attribution", "first"),
    ).reset_index()
    descriptions = []
    for row in grouped.itertuples(index=False):
        part = body_part_label(normalize_body_part(row.body_part)) if row.body_part else ""
        count = f"{row.n_images} image{'s' if row.n_images != 1 else ''}"
        descriptions.append(f"{row.study} ({', '.join(d for d in (part, count) if d)})")
    grouped["description"] = descriptions
    return grouped


def sample_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """The reference boxes of a `samples.csv` row ([] when none or unreadable)."""
    try:
        boxes = json.loads(text) if text else []
        return [tuple(float(v) for v in box) for box in boxes if len(box) == 4]
    except (TypeError, ValueError):
        return []


def model_identity(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """What identifies the installed ensemble in every report: name, version and checksum.

    The name is the manifest's `info.title`; the version its `info.version` when recorded (else
    "unversioned"); the checksum is the sha256 of `manifest.json`, which itself lists the sha256 of
    every member file, so it changes whenever any member or the threshold does.

    Raises:
        EnsembleLoadError: no readable manifest.
    """
    import hashlib

    manifest = read_manifest(folder)
    info = manifest.get("info") or {}
    digest = hashlib.sha256((weights_folder(folder) / MANIFEST).read_bytes()).hexdigest()
    return {"name": str(info.get("title") or "unnamed ensemble"),
            "version": str(manifest.get("version") or info.get("version") or "unversioned"),
            "checksum": f"sha256:{digest}"}
