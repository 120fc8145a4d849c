"""Evaluation reports: from a predictions table to `report.json`, and reading it back as tables.

`build_report` is pure (a dict of JSON-ready values); `write_report` saves it with its CSV tables
(its figures are `charts.write_report_figures`: charts reads reports, never the other way round).
`load_report` and the table functions read it back for the Evaluation page and the model card.
Building a report needs `metrics` (scikit-learn), imported there: reading one does not load it, so the
dashboard's Diagnose page serves a study without scikit-learn and SciPy in memory.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .body_parts import body_part_label
from .csvsafe import write_csv
from .decision import DEFAULT_THRESHOLD, aggregate_studies
from .installed import REPORT_FILE
from .vocabulary import LEVEL_LABELS, LEVELS, METRIC_LABELS, METRICS, level_key


def _records(frame: pd.DataFrame, index_name: str) -> list[dict]:
    frame = frame.reset_index().rename(columns={"index": index_name})
    return json.loads(frame.to_json(orient="records"))


def _level(table: pd.DataFrame, models: Sequence[str], threshold: float, n_boot: int, seed: int,
           groups: pd.Series | None) -> dict[str, Any]:
    from . import metrics

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
        localization: per model localization summaries (see `localization.localization_summary`).
        history: per member training history (column -> list).

    Returns:
        The report as a JSON-ready dict.
    """
    models = [*members, "ensemble"]
    cluster = _cluster_ids(predictions)
    image = _level(predictions, models, threshold, n_boot, seed, cluster)
    studies = aggregate_studies(predictions, models)
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {**(data or {}), "n_images": int(len(predictions)), "n_studies": int(len(studies))},
        "threshold": float(threshold),
        "members": list(members),
        level_key("image"): image["metrics"],
        "per_body_part": {"image": image["per_body_part"]},
        "roc": {"image": image["roc"]},
        "calibration": {"image": image["calibration"]},
        "threshold_table": {"image": _threshold_records(predictions, threshold)},
    }
    if len(studies) < len(predictions):
        study_groups = studies["patient"] if "patient" in studies and studies["patient"].astype(bool).any() else None
        study = _level(studies, models, threshold, n_boot, seed, study_groups)
        report[level_key("study")] = study["metrics"]
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
    from . import metrics

    grid = np.union1d(np.linspace(0.0, 1.0, 101), [float(threshold)])
    table = metrics.threshold_table(frame["label"], frame["ensemble"], grid)
    return json.loads(table.to_json(orient="records"))


def _cluster_ids(predictions: pd.DataFrame) -> pd.Series | None:
    """Bootstrap clusters: patient when known, else study (images of one study move together)."""
    for column in ("patient", "study"):
        if column in predictions and predictions[column].fillna("").astype(str).str.len().gt(0).all():
            return predictions[column].astype(str)
    return None


def comparison_table(report: Mapping[str, Any], level: str = "image") -> pd.DataFrame:
    """Models as rows, `METRICS` as columns, with '[low, high]' CI columns."""
    rows = []
    for model, values in report.get(level_key(level), {}).items():
        row = {"model": model}
        for name in METRICS:
            row[name] = values.get(name)
            low, high = values.get("ci", {}).get(name, (None, None))
            row[f"{name}_ci"] = None if low is None else f"[{low:.3f}, {high:.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def write_report(report: dict[str, Any], predictions: pd.DataFrame, out: str | os.PathLike) -> list[Path]:
    """Write report.json, predictions.csv, comparison and per-body-part CSVs (figures: `charts`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / REPORT_FILE, out / "predictions.csv"]
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    write_csv(predictions, out / "predictions.csv")
    for level in LEVELS:
        if level_key(level) in report:
            path = out / f"comparison_{level}.csv"
            write_csv(comparison_table(report, level), path)
            written.append(path)
    for level, per_model in report["per_body_part"].items():
        if per_model:
            rows = [dict(model=m, **r) for m, records in per_model.items() for r in records]
            path = out / f"per_body_part_{level}.csv"
            write_csv(pd.DataFrame(rows), path)
            written.append(path)
    return written


# ---------------------------------------------------------------------------- reading it back


class ReportError(ValueError):
    """A report.json that cannot be shown; the message says why."""


def load_report(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """Parse and sanity-check a report.json (path or bytes).

    Raises:
        ReportError: unreadable, not JSON, or without image-level or study-level results.
    """
    try:
        text = source.decode("utf-8") if isinstance(source, bytes) else Path(source).read_text()
        report = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"not a readable JSON report ({exc})") from None
    if not isinstance(report, dict):
        raise ReportError("the report is not a JSON object")
    if not any(isinstance(report.get(level_key(level)), dict) for level in LEVELS):
        keys = " nor ".join(repr(level_key(level)) for level in LEVELS)
        raise ReportError(f"the report has neither {keys} results")
    return report


def report_levels(report: Mapping[str, Any]) -> list[str]:
    """The levels with results, among "image" and "study"."""
    return [lv for lv in LEVELS if isinstance(report.get(level_key(lv)), dict)
            and report[level_key(lv)]]


def report_models(report: Mapping[str, Any], level: str = "image") -> list[str]:
    """Models with results at `level`: the members in report order, then "ensemble"."""
    results = report.get(level_key(level)) or {}
    order = [*report.get("members", []), "ensemble"]
    known = [m for m in order if m in results]
    return known + [m for m in results if m not in known]


def number_or_none(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, not a number or NaN."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def format_ci(value: Any, ci: Sequence[Any] | None = None, digits: int = 3) -> str:
    """'0.812 (0.781–0.840)'; '—' when the value is undefined; no interval when it is absent."""
    number = number_or_none(value)
    if number is None:
        return "—"
    text = f"{number:.{digits}f}"
    if ci is not None and len(ci) == 2:
        low, high = number_or_none(ci[0]), number_or_none(ci[1])
        if low is not None and high is not None:
            text += f" ({low:.{digits}f}–{high:.{digits}f})"
    return text


def metrics_table(report: Mapping[str, Any], level: str = "image",
                  metrics: Sequence[str] = tuple(METRIC_LABELS),
                  models: Sequence[str] | None = None) -> pd.DataFrame:
    """Models side by side: one row per metric, one column per model, value and 95% interval as text.

    Args:
        report: a report.json dict.
        level: "image" or "study".
        metrics: metric keys, in row order (labelled by `METRIC_LABELS`).
        models: the models to show (default: every model at that level).

    Returns:
        DataFrame of strings indexed by metric ("images"/"studies" and "abnormal" first); empty
        when the level is absent.
    """
    results = report.get(level_key(level)) or {}
    columns = {}
    for model in models if models is not None else report_models(report, level):
        entry = results[model]
        ci = entry.get("ci") or {}
        column = {"images" if level == "image" else "studies": str(entry.get("n", "—")),
                  "abnormal": str(entry.get("positives", "—"))}
        column.update({METRIC_LABELS[m]: format_ci(entry.get(m), ci.get(m)) for m in metrics})
        columns[model] = column
    frame = pd.DataFrame(columns)
    frame.index.name = "metric"
    return frame


def model_card_metrics(report: Mapping[str, Any], model: str = "ensemble") -> pd.DataFrame:
    """One model's metrics with intervals, one column per level with results (row "n": cases)."""
    columns = {}
    for level in report_levels(report):
        if model in report[level_key(level)]:
            column = metrics_table(report, level, models=[model])[model]
            columns[LEVEL_LABELS[level]] = column.rename(index={"images": "n", "studies": "n"})
    frame = pd.DataFrame(columns)
    frame.index.name = "metric"
    return frame


def per_body_part_frame(report: Mapping[str, Any], level: str, model: str) -> pd.DataFrame:
    """Per-body-part metrics of one model, rounded, with readable column names."""
    rows = ((report.get("per_body_part") or {}).get(level) or {}).get(model) or []
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["body_part"] = frame["body_part"].map(lambda p: "All" if p == "ALL" else body_part_label(p))
    frame = frame.set_index("body_part")
    frame = frame.rename(columns={"positives": "abnormal", **METRIC_LABELS})
    return frame.apply(pd.to_numeric, errors="coerce").round(3)


def threshold_frame(report: Mapping[str, Any], level: str = "image") -> pd.DataFrame:
    """The ensemble's threshold table at `level`, sorted by threshold (empty when absent)."""
    rows = (report.get("threshold_table") or {}).get(level) or []
    frame = pd.DataFrame(rows)
    return frame.sort_values("threshold").reset_index(drop=True) if not frame.empty else frame


def threshold_at(frame: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """The threshold-table row nearest to `threshold`, as a dict."""
    index = (frame["threshold"] - threshold).abs().idxmin()
    return frame.loc[index].to_dict()


def localization_frame(report: Mapping[str, Any], method: str | None = None) -> pd.DataFrame:
    """Pointing game (with 95% interval), mass in boxes, IoU and the chance level per model.

    Args:
        report: a report.json dict.
        method: a heatmap method of `localization_by_method` (default: the report's own method).
    """
    by_method = report.get("localization_by_method") or {}
    data = by_method.get(method) if method else None
    data = data or report.get("localization") or {}
    rows = {}
    for model, entry in data.items():
        rows[model] = {
            "images": entry.get("n"),
            "pointing game (hit rate)": format_ci(entry.get("pointing_game"), entry.get("pointing_game_ci")),
            "heatmap mass in boxes": format_ci(entry.get("mass_in_boxes")),
            "IoU (map above half its peak)": format_ci(entry.get("iou")),
            "box area (chance level)": format_ci(entry.get("box_area_fraction")),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


DETECTION_LABELS = {
    "ap50": "AP@50",
    "ap50_95": "AP@[.50:.95]",
    "recall_at_0.5_fp": "Recall at 0.5 false positive per image",
    "recall_at_1_fp": "Recall at 1 false positive per image",
    "threshold": "Region threshold (a finding from this score)",
    "n_images": "Images (normal ones included)",
    "n_boxes": "Annotated boxes",
    "n_regions": "Suspected regions",
}
"""The report's detector figures of the suspected regions (`regions.detection_metrics`), as tables name them."""


def detection_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """The suspected regions scored as a detector (report key "detection"): one row per figure; empty when
    the report has none."""
    data = report.get("detection") or {}
    rows = [{"figure": label, "value": format_ci(data[key]) if isinstance(data[key], float) else str(data[key])}
            for key, label in DETECTION_LABELS.items() if data.get(key) is not None]
    return pd.DataFrame(rows, columns=["figure", "value"])


def map_reliability_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """Whether the fused lesion map reads as a probability (report key "map_reliability"): one row per bin
    of map values that holds pixels; empty when the report has none."""
    rows = [{"map value": f"{b['low']:.2f}–{b['high']:.2f}", "pixels": b["pixels"], "mean map value": b["mean"],
             "share inside a box": b["in_boxes"]}
            for b in report.get("map_reliability") or [] if b.get("pixels")]
    return pd.DataFrame(rows, columns=["map value", "pixels", "mean map value", "share inside a box"])


def sanity_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """The model-randomization check: one row per member and stage, Spearman correlation with the trained maps."""
    sanity = report.get("sanity") or {}
    rows = [{"member": member, "re-initialised": row["stage"], "layers": row["layers"],
             "rank correlation with the trained maps": number_or_none(row.get("spearman")),
             "|rank correlation|": number_or_none(row.get("spearman_abs")),
             "maps that became constant": row.get("undefined", 0)}
            for member, stages in (sanity.get("members") or {}).items() for row in stages]
    return pd.DataFrame(rows)


def members_frame(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """The ensemble's members from its manifest: name, architecture, input size, the lesion map's weight in
    the member's probability (`decision.member_probability`), checksum prefix."""
    rows = [{"member": m.get("name"), "architecture": m.get("architecture"),
             "input size (px)": m.get("input_size"), "Grad-CAM layer": m.get("gradcam_layer"),
             "lesion map's weight in its probability": float(m.get("map_evidence") or 0.0),
             "sha256": str(m.get("sha256", ""))[:12]} for m in manifest.get("members", [])]
    return pd.DataFrame(rows)


def member_reading(manifest: Mapping[str, Any]) -> str:
    """How a member reads an image, where the manifest says more than 'its classifier's probability' (mirroring,
    the lesion map's weight); "" where it does not. The About page and the model card say it."""
    weights = sorted({float(m.get("map_evidence") or 0.0) for m in manifest.get("members", [])})
    text = ""
    if manifest.get("test_time_flip"):
        text += "Each member reads every image twice, as it is and mirrored left-right, and averages the two. "
    if any(weights):
        share = " or ".join(f"{w:g}" for w in weights if w)
        text += ("A member's probability combines its classifier's with the peak of its lesion map (the chance "
                 f"that the likeliest spot holds a fracture): their geometric mean, the map weighted {share}. ")
    return text.strip()


def reading_text(manifest: Mapping[str, Any]) -> str:
    """How the ensemble reads an image and turns its members' readings into a verdict, as the About page says."""
    members = manifest.get("members", [])
    reading = member_reading(manifest)
    threshold = float(manifest.get("threshold", DEFAULT_THRESHOLD))
    return (f"An ensemble of {len(members)} convolutional network{'s' if len(members) != 1 else ''}. "
            + (f"{reading} " if reading else "")
            + "The ensemble probability is the mean of the members' probabilities, and a study is called "
            f"abnormal when the mean over its images reaches the threshold **{threshold:.2f}**.")
