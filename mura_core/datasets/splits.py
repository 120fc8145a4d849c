"""Splits: a patient-level hold-out, and split files that fix a split next to the code that uses it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .base import IndexProblem, relative_keys


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
    keys = relative_keys(table["path"], Path(root).expanduser().resolve())
    out = pd.DataFrame(
        {"path_key": keys.to_numpy(), "split": table["split"].astype(str).to_numpy()}
    )
    out = out.sort_values("path_key", kind="stable")
    path = Path(path)
    out.to_csv(path, index=False)
    return path


def apply_split_file(
    table: pd.DataFrame, root: Path, split_file: Path
) -> tuple[pd.DataFrame, list[IndexProblem]]:
    """Set the ``split`` column of an index table from a split file (see `write_split_file`)."""
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
    keys = relative_keys(table["path"], root)
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
