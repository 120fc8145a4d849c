"""Evaluation reports: from a predictions table to `report.json`, tables and plots.

`build_report` is pure (a dict of JSON-ready values); `write_report` saves it with its tables and
PNG plots. The dashboard's Evaluation page reads the same `report.json`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import metrics

SUMMARY_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc", "kappa")


def _records(frame: pd.DataFrame, index_name: str) -> list[dict]:
    frame = frame.reset_index().rename(columns={"index": index_name})
    return json.loads(frame.to_json(orient="records"))


def _level(table: pd.DataFrame, models: Sequence[str], threshold: float, n_boot: int, seed: int,
           groups: pd.Series | None) -> dict[str, Any]:
    y = table["label"].to_numpy()
    out: dict[str, Any] = {"metrics": {}, "per_body_part": {}, "roc": {}, "calibration": {}}
    for model in models:
        p = table[model].to_numpy()
        out["metrics"][model] = metrics.metrics_with_ci(y, p, threshold, n_boot, seed, groups=groups)
        if "body_part" in table and table["body_part"].astype(str).str.len().gt(0).any():
            out["per_body_part"][model] = _records(
                metrics.per_group_metrics(table, model, "body_part", "label", threshold), "body_part")
        out["roc"][model] = metrics.roc_points(y, p)
        out["calibration"][model] = metrics.calibration(y, p)
    return out


def build_report(
    predictions: pd.DataFrame,
    members: Sequence[str],
    threshold: float,
    data: dict[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    localization: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Image- and study-level metrics with bootstrap CIs, per member and for the ensemble.

    Args:
        predictions: one row per image with `label`, `study`, `body_part`, `patient`, one column of
            probabilities per member and an `ensemble` column.
        members: the member columns.
        threshold: the decision threshold (the ensemble's, applied to every model).
        data: what was evaluated (root, format, split), recorded as is.
        n_boot: bootstrap resamples for the 95% intervals (clustered by patient, else study).
        seed: bootstrap seed.
        localization: per model localization summaries (see `metrics.localization_summary`).
        history: per member training history (column -> list).

    Returns:
        The report as a JSON-ready dict.
    """
    models = [*members, "ensemble"]
    cluster = _cluster_ids(predictions)
    image = _level(predictions, models, threshold, n_boot, seed, cluster)
    studies = metrics.aggregate_studies(predictions, models)
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {**(data or {}), "n_images": int(len(predictions)), "n_studies": int(len(studies))},
        "threshold": float(threshold),
        "members": list(members),
        "image_level": image["metrics"],
        "per_body_part": {"image": image["per_body_part"]},
        "roc": {"image": image["roc"]},
        "calibration": {"image": image["calibration"]},
        "threshold_table": {"image": _threshold_records(predictions, threshold)},
    }
    if len(studies) < len(predictions):
        study_groups = studies["patient"] if "patient" in studies and studies["patient"].astype(bool).any() else None
        study = _level(studies, models, threshold, n_boot, seed, study_groups)
        report["study_level"] = study["metrics"]
        report["per_body_part"]["study"] = study["per_body_part"]
        report["roc"]["study"] = study["roc"]
        report["calibration"]["study"] = study["calibration"]
        report["threshold_table"]["study"] = _threshold_records(studies, threshold)
    if localization:
        report["localization"] = localization
    if history:
        report["history"] = history
    return report


def _threshold_records(frame: pd.DataFrame, threshold: float) -> list[dict]:
    """The ensemble's threshold table on a 0.01 grid plus the operating threshold itself."""
    grid = np.union1d(np.linspace(0.0, 1.0, 101), [float(threshold)])
    table = metrics.threshold_table(frame["label"], frame["ensemble"], grid)
    return json.loads(table.to_json(orient="records"))


def _cluster_ids(predictions: pd.DataFrame) -> pd.Series | None:
    """Bootstrap clusters: patient when known, else study (images of one study move together)."""
    for column in ("patient", "study"):
        if column in predictions and predictions[column].fillna("").astype(str).str.len().gt(0).all():
            return predictions[column].astype(str)
    return None


def comparison_table(report: dict[str, Any], level: str = "image_level") -> pd.DataFrame:
    """Models as rows, metrics as columns, with '[low, high]' CI columns."""
    rows = []
    for model, values in report.get(level, {}).items():
        row = {"model": model}
        for name in SUMMARY_METRICS:
            row[name] = values.get(name)
            low, high = values.get("ci", {}).get(name, (None, None))
            row[f"{name}_ci"] = None if low is None else f"[{low:.3f}, {high:.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def write_report(report: dict[str, Any], predictions: pd.DataFrame, out: str | os.PathLike) -> list[Path]:
    """Write report.json, predictions.csv, comparison and per-body-part CSVs and the PNG plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "predictions.csv"]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    predictions.to_csv(out / "predictions.csv", index=False)
    for level in ("image_level", "study_level"):
        if level in report:
            path = out / f"comparison_{level.split('_')[0]}.csv"
            comparison_table(report, level).to_csv(path, index=False)
            written.append(path)
    for level, per_model in report["per_body_part"].items():
        if per_model:
            rows = [dict(model=m, **r) for m, records in per_model.items() for r in records]
            path = out / f"per_body_part_{level}.csv"
            pd.DataFrame(rows).to_csv(path, index=False)
            written.append(path)
    written += _plot_report(report, out)
    return written


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    plt = _plt()
    written = []
    for level, curves in report["roc"].items():
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for model, roc in curves.items():
            if roc["fpr"]:
                style = {"linewidth": 2.5, "color": "black"} if model == "ensemble" else {"linewidth": 1.2}
                ax.plot(roc["fpr"], roc["tpr"], label=f"{model} (AUC {roc['auc']:.3f})", **style)
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {level} level")
        ax.legend(loc="lower right", fontsize=8)
        path = out / f"roc_{level}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    for level in ("image_level", "study_level"):
        if level not in report:
            continue
        models = list(report[level])
        fig, axes = plt.subplots(1, len(models), figsize=(2.8 * len(models), 3))
        for ax, model in zip(np.atleast_1d(axes), models):
            m = report[level][model]
            matrix = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
            ax.imshow(matrix, cmap="Blues")
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, str(value), ha="center", va="center",
                        color="white" if value > matrix.max() / 2 else "black")
            ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["normal", "abnormal"],
                   yticklabels=["normal", "abnormal"], xlabel="predicted", title=model)
            ax.set_ylabel("true")
        fig.suptitle(f"Confusion matrices ({level.replace('_', ' ')}, threshold {report['threshold']:.3f})")
        path = out / f"confusion_{level.split('_')[0]}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def plot_history(history: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Loss and accuracy / AUC curves per epoch from a Keras CSVLogger table."""
    plt = _plt()
    epochs = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in ("loss", "val_loss"):
        if name in history:
            axes[0].plot(epochs, history[name], marker="o", label=name)
    for name in ("accuracy", "val_accuracy", "auc", "val_auc"):
        if name in history:
            axes[1].plot(epochs, history[name], marker="o", label=name)
    axes[0].set(xlabel="epoch", title="loss")
    axes[1].set(xlabel="epoch", title="accuracy and AUC")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
