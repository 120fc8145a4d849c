"""Classification metrics: scores at a threshold, bootstrap intervals, curves, threshold choice.

Everything here is a pure function of arrays or DataFrames. Scores come from scikit-learn; the
decision rule is `decision.is_abnormal` (positive when prob >= threshold) and the metric names are
`vocabulary.METRICS`. Returned dicts hold plain Python ints/floats/lists (or None where a metric is
undefined) so they serialise to JSON as they are. Study aggregation lives in `decision`,
localization scores in `localization`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    auc,
    brier_score_loss,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from .decision import DEFAULT_THRESHOLD, predicted_labels
from .vocabulary import METRICS

GROUP_METRIC_COLUMNS = ("n", "positives", *METRICS)


# --------------------------------------------------------------------------- helpers


def _as_binary_arrays(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels (0/1) and probabilities to 1-D numpy arrays."""
    y_true = np.asarray(y_true).ravel()
    y_prob = np.asarray(y_prob, dtype=float).ravel()
    if y_true.shape != y_prob.shape:
        raise ValueError(
            f"y_true and y_prob differ in length: {y_true.size} vs {y_prob.size}"
        )
    if y_true.size == 0:
        raise ValueError("no samples: y_true and y_prob are empty")
    if np.isnan(y_prob).any():
        raise ValueError("y_prob contains NaN")
    if not np.isin(y_true, (0, 1)).all():
        bad = sorted(set(np.unique(y_true).tolist()) - {0, 1})
        raise ValueError(f"y_true must hold only 0 and 1, found {bad}")
    return y_true.astype(int), y_prob


def _float_or_none(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _auc_or_none(y_true: np.ndarray, y_prob: np.ndarray) -> float | None:
    if np.unique(y_true).size < 2:
        return None
    return float(roc_auc_score(y_true, y_prob))


def _kappa_or_none(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    # Undefined (0/0) when truth and prediction are the same single class.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return _float_or_none(cohen_kappa_score(y_true, y_pred, labels=[0, 1]))


def _rates_from_counts(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    """Threshold metrics from (arrays of) confusion counts, NaN where undefined.

    Vectorised counterpart of the sklearn scores used in `binary_metrics`, for the
    bootstrap and the threshold table where calling sklearn per resample or per
    threshold would be slow. The tests check it against sklearn.
    """
    tp, fp, tn, fn = (np.asarray(a, dtype=float) for a in (tp, fp, tn, fn))
    n = tp + fp + tn + fn
    pos, neg = tp + fn, tn + fp
    pred_pos, pred_neg = tp + fp, tn + fn
    # Cohen's kappa for two raters written as 1 - observed / chance disagreement.
    chance_disagreement = (pos * pred_neg + neg * pred_pos) / np.where(n > 0, n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "accuracy": (tp + tn) / n,
            "precision": tp / pred_pos,
            "recall": tp / pos,
            "specificity": tn / neg,
            "f1": 2 * tp / (2 * tp + fp + fn),
            "kappa": 1.0 - (fp + fn) / chance_disagreement,
        }


def _cluster_codes(groups, n: int) -> np.ndarray:
    """Integer cluster id per row; missing ids become singleton clusters."""
    groups = np.asarray(groups, dtype=object).ravel()
    if groups.size != n:
        raise ValueError(f"groups has {groups.size} entries for {n} samples")
    series = pd.Series(groups, dtype=object)
    series = series.mask(series.astype(str).str.strip() == "")
    codes, uniques = pd.factorize(series)
    missing = codes < 0
    codes[missing] = len(uniques) + np.arange(missing.sum())
    return codes


def percentile_interval(
    values: np.ndarray, alpha: float
) -> tuple[float | None, float | None]:
    """The (alpha/2, 1 - alpha/2) quantiles of the non-NaN `values`; (None, None) when there are none."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (None, None)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


# ------------------------------------------------------------------ classification


def binary_metrics(y_true, y_prob, threshold: float = 0.5) -> dict:
    """Confusion-matrix metrics, AUC and Cohen's kappa at one threshold.

    Args:
        y_true: Ground-truth labels, 0 (normal) or 1 (abnormal).
        y_prob: Predicted probability of the positive class.
        threshold: Decision threshold; a sample is positive when prob >= threshold.

    Returns:
        Dict with n, positives, negatives, accuracy, precision, recall (sensitivity),
        specificity, f1, auc, kappa, tp, fp, tn, fn and threshold. Precision, recall,
        specificity and f1 are 0.0 when their denominator is zero (sklearn's
        ``zero_division=0``); auc is None when only one class is present and kappa is
        None when truth and prediction are the same single class.
    """
    y_true, y_prob = _as_binary_arrays(y_true, y_prob)
    y_pred = predicted_labels(y_prob, threshold)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "n": int(y_true.size),
        "positives": int(tp + fn),
        "negatives": int(tn + fp),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "specificity": float(
            recall_score(y_true, y_pred, pos_label=0, labels=[0, 1], zero_division=0)
        ),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "auc": _auc_or_none(y_true, y_prob),
        "kappa": _kappa_or_none(y_true, y_pred),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
        "threshold": float(threshold),
    }


def bootstrap_ci(
    y_true,
    y_prob,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    groups=None,
    alpha: float = 0.05,
) -> dict[str, tuple[float | None, float | None]]:
    """Percentile bootstrap confidence intervals for the `binary_metrics` scores.

    With ``groups`` (patient or study ids) whole groups are resampled (cluster
    bootstrap), which is right when several images come from one study. Resamples in
    which a metric is undefined (no positives for recall, a single class for AUC, no
    predicted positives for precision, ...) are skipped for that metric.

    Args:
        y_true: Ground-truth labels, 0 or 1.
        y_prob: Predicted probability of the positive class.
        threshold: Decision threshold (positive when prob >= threshold).
        n_boot: Number of bootstrap resamples.
        seed: Seed for ``numpy.random.default_rng``; equal inputs give equal intervals.
        groups: Optional cluster id per sample; empty or missing ids are singletons.
        alpha: Two-sided level; 0.05 gives 95% intervals.

    Returns:
        Dict mapping accuracy, precision, recall, specificity, f1, auc and kappa to a
        (low, high) tuple of floats, or (None, None) when no resample defined it.
    """
    y_true, y_prob = _as_binary_arrays(y_true, y_prob)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = y_true.size
    codes = np.arange(n) if groups is None else _cluster_codes(groups, n)
    n_clusters = int(codes.max()) + 1

    # Resampling clusters with replacement == multinomial counts per cluster; every
    # confusion count of a resample is then a weighted sum of per-cluster counts.
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), n_boot)
    y_pred = predicted_labels(y_prob, threshold)
    cells = np.stack(
        [
            np.bincount(
                codes, weights=(y_true == t) & (y_pred == p), minlength=n_clusters
            )
            for t, p in ((1, 1), (0, 1), (0, 0), (1, 0))
        ],
        axis=1,
    )
    tp, fp, tn, fn = (weights @ cells).T
    samples = _rates_from_counts(tp, fp, tn, fn)

    # AUC needs the scores, so it goes through sklearn once per resample, with the
    # resample expressed as sample weights (roc_curve + auc: same value as
    # roc_auc_score at half the validation overhead).
    auc_samples = np.full(n_boot, np.nan)
    both_classes = (tp + fn > 0) & (tn + fp > 0)
    for b in np.flatnonzero(both_classes):
        row_weight = weights[b, codes]
        keep = row_weight > 0
        fpr, tpr, _ = roc_curve(
            y_true[keep], y_prob[keep], sample_weight=row_weight[keep]
        )
        auc_samples[b] = auc(fpr, tpr)
    samples["auc"] = auc_samples

    return {name: percentile_interval(samples[name], alpha) for name in METRICS}


def metrics_with_ci(
    y_true,
    y_prob,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    groups=None,
) -> dict:
    """`binary_metrics` plus 95% bootstrap intervals under the key "ci".

    Args:
        y_true: Ground-truth labels, 0 or 1.
        y_prob: Predicted probability of the positive class.
        threshold: Decision threshold (positive when prob >= threshold).
        n_boot: Number of bootstrap resamples.
        seed: Bootstrap seed.
        groups: Optional cluster id per sample for a cluster bootstrap.

    Returns:
        The `binary_metrics` dict with an extra "ci" entry from `bootstrap_ci`.
    """
    result = binary_metrics(y_true, y_prob, threshold)
    result["ci"] = bootstrap_ci(
        y_true, y_prob, threshold=threshold, n_boot=n_boot, seed=seed, groups=groups
    )
    return result


# ------------------------------------------------------------------------ tables


def per_group_metrics(
    table: pd.DataFrame,
    prob_col: str,
    group_col: str = "body_part",
    label_col: str = "label",
    threshold: float = 0.5,
) -> pd.DataFrame:
    """`binary_metrics` per group (e.g. body part) plus an overall "ALL" row.

    Args:
        table: Rows with a group column, a 0/1 label and a probability column.
        prob_col: Probability column.
        group_col: Column to group by.
        label_col: Label column.
        threshold: Decision threshold (positive when prob >= threshold).

    Returns:
        DataFrame indexed by group value (index name ``group_col``; groups sorted, "ALL"
        last) with columns n, positives, accuracy, precision, recall, specificity, f1,
        auc and kappa; auc/kappa are NaN where undefined.
    """
    rows, index = [], []
    for value, part in table.groupby(group_col, sort=True, dropna=False):
        index.append(value)
        rows.append(binary_metrics(part[label_col], part[prob_col], threshold))
    index.append("ALL")
    rows.append(binary_metrics(table[label_col], table[prob_col], threshold))
    out = pd.DataFrame(rows, index=pd.Index(index, name=group_col))
    out = out.loc[:, list(GROUP_METRIC_COLUMNS)]
    return out.astype({"auc": float, "kappa": float})


# ------------------------------------------------------------- curves, thresholds


def roc_points(y_true, y_prob) -> dict:
    """ROC curve points for plotting, JSON-ready.

    Args:
        y_true: Ground-truth labels, 0 or 1.
        y_prob: Predicted probability of the positive class.

    Returns:
        Dict with lists "fpr", "tpr", "thresholds" (sklearn's leading ``inf``
        replaced by ``1.0 + max(y_prob)``) and "auc". With a single class the curve is
        undefined: the lists are empty and auc is None.
    """
    y_true, y_prob = _as_binary_arrays(y_true, y_prob)
    if np.unique(y_true).size < 2:
        return {"fpr": [], "tpr": [], "thresholds": [], "auc": None}
    fpr, tpr, thresholds = roc_curve(y_true, y_prob)
    thresholds = np.where(np.isinf(thresholds), 1.0 + float(y_prob.max()), thresholds)
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "thresholds": thresholds.tolist(),
        "auc": float(roc_auc_score(y_true, y_prob)),
    }


def calibration(y_true, y_prob, n_bins: int = 10) -> dict:
    """Reliability-diagram data and Brier score.

    Args:
        y_true: Ground-truth labels, 0 or 1.
        y_prob: Predicted probability of the positive class, in [0, 1].
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        Dict with "prob_true" (observed positive rate), "prob_pred" (mean predicted
        probability) and "counts" (samples), one entry per non-empty bin, and
        "brier" (mean squared error of the probabilities).
    """
    y_true, y_prob = _as_binary_arrays(y_true, y_prob)
    prob_true, prob_pred = calibration_curve(
        y_true, y_prob, n_bins=n_bins, strategy="uniform"
    )
    # Same binning as calibration_curve(strategy="uniform"), to report bin sizes.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], y_prob), minlength=n_bins)
    return {
        "prob_true": prob_true.tolist(),
        "prob_pred": prob_pred.tolist(),
        "counts": counts[counts > 0].tolist(),
        "brier": float(brier_score_loss(y_true, y_prob, pos_label=1)),
    }


def threshold_table(y_true, y_prob, thresholds=None) -> pd.DataFrame:
    """Operating characteristics over a grid of thresholds, for a threshold explorer.

    Args:
        y_true: Ground-truth labels, 0 or 1.
        y_prob: Predicted probability of the positive class.
        thresholds: Thresholds to evaluate; defaults to ``np.linspace(0, 1, 101)``.

    Returns:
        DataFrame with one row per threshold and columns threshold, sensitivity,
        specificity, precision, f1, youden (sensitivity + specificity - 1), tp, fp,
        tn, fn. Scores with a zero denominator are 0.0, as in `binary_metrics`.
    """
    y_true, y_prob = _as_binary_arrays(y_true, y_prob)
    if thresholds is None:
        thresholds = np.linspace(0.0, 1.0, 101)
    thresholds = np.asarray(thresholds, dtype=float).ravel()
    # Count samples with prob >= t per class via binary search on sorted scores.
    pos_sorted = np.sort(y_prob[y_true == 1])
    neg_sorted = np.sort(y_prob[y_true == 0])
    tp = pos_sorted.size - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = neg_sorted.size - np.searchsorted(neg_sorted, thresholds, side="left")
    fn = pos_sorted.size - tp
    tn = neg_sorted.size - fp
    rates = {k: np.nan_to_num(v) for k, v in _rates_from_counts(tp, fp, tn, fn).items()}
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "sensitivity": rates["recall"],
            "specificity": rates["specificity"],
            "precision": rates["precision"],
            "f1": rates["f1"],
            "youden": rates["recall"] + rates["specificity"] - 1.0,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
        }
    )


def threshold_for_sensitivity(y_true, y_prob, target: float = 0.80) -> float:
    """Highest threshold whose sensitivity (recall at prob >= t) reaches ``target``.

    Args:
        y_true: Ground-truth labels, 0 or 1.
        y_prob: Predicted probability of the positive class.
        target: Required sensitivity, in (0, 1].

    Returns:
        The threshold, always one of the scores in ``y_prob``.

    Raises:
        ValueError: If there are no positives or ``target`` is outside (0, 1].
    """
    y_true, y_prob = _as_binary_arrays(y_true, y_prob)
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    if not y_true.any():
        raise ValueError("threshold_for_sensitivity: y_true has no positives")
    with warnings.catch_warnings():
        # No negatives only makes fpr undefined; tpr is all we use.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        _, tpr, thresholds = roc_curve(y_true, y_prob, drop_intermediate=False)
    # thresholds decrease and tpr[i] is the recall at prob >= thresholds[i]; the small
    # tolerance keeps e.g. 4/5 from missing a target of 0.8 through rounding.
    first = int(np.argmax(tpr >= target - 1e-12))
    return float(thresholds[first])


def choose_threshold(y_true, y_prob, sensitivity: float | None = None) -> tuple[float, str]:
    """The decision threshold chosen on validation data, and its rule in words (for the manifest).

    Args:
        y_true: validation labels, 0 or 1.
        y_prob: validation probabilities.
        sensitivity: the sensitivity the threshold must reach (`threshold_for_sensitivity`); None or 0
            keeps `decision.DEFAULT_THRESHOLD`.

    Returns:
        (threshold, rule).
    """
    if not sensitivity:
        return DEFAULT_THRESHOLD, f"{DEFAULT_THRESHOLD}"
    return (threshold_for_sensitivity(y_true, y_prob, sensitivity),
            f"highest threshold with validation sensitivity >= {sensitivity}")
