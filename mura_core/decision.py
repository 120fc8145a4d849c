"""The decision rules: how members, images and studies combine, and when a score is 'abnormal'.

Written once and called by the ensemble, the CLI, the metrics, the reports, training and the
dashboard:

* a member's probability is its classifier's, or, for a member whose manifest gives its lesion map a say
  ("map_evidence" w), the weighted geometric mean of its classifier's and its lesion map's peak
  (`member_probability`);
* an image's ensemble probability is the mean of its members' probabilities (`ensemble_probability`);
* a study's probability is the mean over its readable images (`study_probability`,
  `aggregate_studies` for tables): MURA's convention;
* a probability is 'abnormal' when it is at or above the threshold (`is_abnormal`, `verdict`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .vocabulary import LABEL_NAMES

DEFAULT_THRESHOLD = 0.5
"""The threshold when none is chosen on validation data (and when a manifest records none)."""


def is_abnormal(probability, threshold: float):
    """The verdict rule, `probability >= threshold`, for a number (bool) or an array (bool array)."""
    result = np.asarray(probability, dtype=float) >= float(threshold)
    return bool(result) if result.ndim == 0 else result


def predicted_labels(probabilities, threshold: float) -> np.ndarray:
    """0/1 labels of an array of probabilities under `is_abnormal`."""
    return is_abnormal(np.asarray(probabilities, dtype=float).ravel(), threshold).astype(int)


def verdict(probability: float | None, threshold: float) -> str | None:
    """'abnormal' or 'normal' (`LABEL_NAMES`), or None when there is no probability."""
    if probability is None or (isinstance(probability, float) and np.isnan(probability)):
        return None
    return LABEL_NAMES[int(is_abnormal(probability, threshold))]


def member_probability(classifier, map_peak, map_evidence: float):
    """A member's probability of 'abnormal' from its two heads: classifier^(1 - w) * map_peak^w.

    The classifier reads the whole image; the lesion map, trained on the lesion boxes, says where a lesion
    lies, and its peak (`heatmaps.peak_value` of the map read as a probability) how likely the likeliest spot
    holds one. Their weighted geometric mean calls an image abnormal when both heads lean that way, and lets
    one head's confident 'no' pull down the other's 'maybe'. w = 0 is the classifier alone, w = 1 the map
    alone; the bundled model's w was chosen on validation (docs/bundled-model.md).

    Args:
        classifier: the classifier's probabilities (a number or an array).
        map_peak: the lesion map's peak, of the same shape.
        map_evidence: w in [0, 1].
    """
    if not 0.0 <= map_evidence <= 1.0:
        raise ValueError(f"map_evidence must lie in [0, 1], not {map_evidence!r}")
    classifier = np.clip(np.asarray(classifier, dtype=np.float64), 0.0, 1.0)
    peak = np.clip(np.asarray(map_peak, dtype=np.float64), 0.0, 1.0)
    return classifier ** (1.0 - map_evidence) * peak ** map_evidence


def ensemble_probability(member_probabilities: Iterable[float]) -> float:
    """An image's ensemble probability: the mean of its members' probabilities."""
    return float(np.mean(list(member_probabilities)))


def study_probability(image_probabilities: Iterable[float | None]) -> float | None:
    """A study's probability: the mean over its readable images (None/NaN are left out); None if none."""
    values = np.array([np.nan if p is None else p for p in image_probabilities], dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def _format_pair(value: float, threshold: float) -> tuple[str, str]:
    """Format two numbers with as few decimals (2 to 6) as keep them apart."""
    for digits in range(2, 7):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b or value == threshold:
            break
    return a, b


def verdict_text(probability: float | None, threshold: float) -> str:
    """Sentence for the verdict, e.g. 'Abnormal (ensemble 0.73 ≥ threshold 0.45)'."""
    if probability is None:
        return "No verdict: none of the images could be read"
    value, limit = _format_pair(probability, threshold)
    if is_abnormal(probability, threshold):
        return f"Abnormal (ensemble {value} ≥ threshold {limit})"
    return f"Normal (ensemble {value} < threshold {limit})"


def aggregate_studies(
    table: pd.DataFrame,
    prob_columns: str | Sequence[str],
    study_col: str = "study",
    label_col: str = "label",
    extra_cols: Iterable[str] = ("body_part", "patient"),
) -> pd.DataFrame:
    """Collapse an image-level table to one row per study, with `study_probability` per column.

    Args:
        table: Image-level rows with a study id, a label and probability columns.
        prob_columns: Name or names of probability columns; each becomes the study's probability.
        study_col: Column holding the study id. Rows with an empty or missing id are each their own
            study, identified by their "path" when that column exists.
        label_col: Column holding the 0/1 label; the study label is the max.
        extra_cols: Columns carried over with the study's first non-missing value; those absent
            from ``table`` are skipped.

    Returns:
        DataFrame with columns study_col, label_col, n_images, the extra columns and the
        probability columns, one row per study in order of first appearance.
    """
    prob_columns = [prob_columns] if isinstance(prob_columns, str) else list(prob_columns)
    missing = [c for c in [study_col, label_col, *prob_columns] if c not in table.columns]
    if missing:
        raise ValueError(f"aggregate_studies: table has no column(s) {missing}")
    extras = [c for c in extra_cols if c in table.columns and c != study_col]

    study = table[study_col].astype(object)
    empty = study.isna() | (study.astype(str).str.strip() == "")
    if empty.any():
        if "path" in table.columns:
            fallback = table["path"].astype(str)
        else:
            fallback = pd.Series([f"row-{i}" for i in table.index], index=table.index, dtype=object)
        study = study.where(~empty, fallback)

    grouped = table.assign(**{study_col: study}).groupby(study_col, sort=False)
    out = grouped.agg(
        **{label_col: (label_col, "max")},
        n_images=(label_col, "size"),
        **{c: (c, "first") for c in extras},
        **{c: (c, study_probability) for c in prob_columns},
    ).reset_index()
    out[label_col] = out[label_col].astype(int)
    return out
