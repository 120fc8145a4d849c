"""Statistics of an index table: headline numbers, counts per split x body part x label, image sizes.

Pure functions of the table (image sizes read file headers through `imaging.image_size`). The
Dataset explorer shows them; `python -m mura_core index` prints `summarize` to compare a copy of a
dataset with its published figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ..body_parts import body_part_label
from ..imaging import image_size
from ..vocabulary import LABEL_NAMES


def _patients(table: pd.DataFrame) -> pd.Series:
    """Patient ids, with the empty ones (layouts without patients) left out."""
    patients = table["patient"].astype(str)
    return patients[patients.str.strip() != ""]


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
    patients = data["patient"].where(data["patient"] != "")  # NaN: no patient id (not counted)
    per_split = pd.DataFrame({
        "images": data.groupby("split").size(),
        "studies": data.groupby("split")["study"].nunique(),
        "patients": patients.groupby(data["split"]).nunique(),
        LABEL_NAMES[0]: (data["label"] == 0).groupby(data["split"]).sum(),
        LABEL_NAMES[1]: (data["label"] == 1).groupby(data["split"]).sum(),
    })
    per_part = data.pivot_table(index="body_part", columns="split", values="path",
                                aggfunc="count", fill_value=0)
    per_part.columns.name = None
    return per_split, per_part


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """A copy with a `label_name` column, and empty splits and body parts named for display."""
    out = table.copy()
    out["label_name"] = out["label"].map(LABEL_NAMES).fillna("unknown")
    out["split"] = out["split"].replace("", "(no split)").fillna("(no split)")
    out["body_part"] = out["body_part"].replace("", "(unknown)").fillna("(unknown)")
    return out


def dataset_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of an index table: images, studies, patients, abnormal shares, splits."""
    studies = table.groupby("study")["label"].max() if len(table) else pd.Series(dtype=int)
    patients = _patients(table)
    return {
        "images": int(len(table)),
        "studies": int(studies.size),
        "patients": int(patients.nunique()),
        "abnormal_images": int(table["label"].sum()) if len(table) else 0,
        "abnormal_studies": int(studies.sum()),
        "splits": sorted(s for s in table["split"].astype(str).unique() if s),
        "body_parts": sorted(p for p in table["body_part"].astype(str).unique() if p),
    }


def count_frame(table: pd.DataFrame, unit: str = "images") -> pd.DataFrame:
    """Counts per split x body part x label.

    Args:
        table: an index table (columns of `mura_core.datasets.COLUMNS`).
        unit: "images" (rows) or "studies" (distinct study ids).

    Returns:
        DataFrame with columns split, body_part, label_name, count.
    """
    if unit not in {"images", "studies"}:
        raise ValueError(f"unit must be 'images' or 'studies', got {unit!r}")
    data = labelled(table)
    keys = ["split", "body_part", "label_name"]
    if unit == "images":
        counts = data.groupby(keys).size()
    else:
        counts = data.groupby(keys)["study"].nunique()
    return counts.rename("count").reset_index()


def count_table(table: pd.DataFrame, unit: str = "images") -> pd.DataFrame:
    """`count_frame` as a table: one row per split and body part, a column per label and a total."""
    counts = count_frame(table, unit)
    counts["body_part"] = counts["body_part"].map(lambda p: body_part_label(p) if p != "(unknown)" else p)
    wide = counts.pivot_table(index=["split", "body_part"], columns="label_name", values="count",
                              fill_value=0, aggfunc="sum")
    wide = wide.reindex(columns=[c for c in (*LABEL_NAMES.values(), "unknown") if c in wide.columns])
    wide["total"] = wide.sum(axis=1)
    wide.columns.name = None
    return wide.rename_axis(index=["split", "body part"])


def sample_paths(table: pd.DataFrame, n: int = 500, seed: int = 0) -> list[str]:
    """At most `n` image paths drawn at random (reproducibly) from an index table."""
    if len(table) <= n:
        return table["path"].astype(str).tolist()
    return table["path"].sample(n=n, random_state=seed).astype(str).tolist()


def image_sizes(paths: Iterable[str]) -> pd.DataFrame:
    """Width and height of each image, read from the header only (PIL), DICOM via its Rows/Columns.

    Returns:
        DataFrame with columns path, width, height; unreadable files are left out.
    """
    rows = []
    for path in paths:
        size = image_size(path)
        if size is not None:
            rows.append({"path": str(path), "width": size[0], "height": size[1]})
    return pd.DataFrame(rows, columns=["path", "width", "height"])


def common_sizes(sizes: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The `n` most frequent image sizes: columns size ("W x H") and images."""
    counts = sizes.groupby(["width", "height"]).size().sort_values(ascending=False).head(n)
    return pd.DataFrame({"size (W x H)": [f"{w} x {h}" for w, h in counts.index], "images": counts.values})


def filter_table(table: pd.DataFrame, splits: Sequence[str] | None = None,
                 body_parts: Sequence[str] | None = None,
                 labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of an index table matching the chosen splits, body parts and labels ('normal'/'abnormal').

    An empty or None selection keeps everything for that column.
    """
    keep = pd.Series(True, index=table.index)
    if splits:
        keep &= table["split"].isin(splits)
    if body_parts:
        keep &= table["body_part"].isin(body_parts)
    if labels:
        keep &= table["label"].map(LABEL_NAMES).isin(labels)
    return table[keep]


def problems_frame(problems: Sequence[Any]) -> pd.DataFrame:
    """Index problems (objects with `path` and `reason`) as a two-column table."""
    return pd.DataFrame([{"path": p.path, "reason": p.reason} for p in problems], columns=["path", "reason"])
