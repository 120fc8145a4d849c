"""Figures and small data helpers for the dashboard, free of any Streamlit call.

Every function here is a pure function of its arguments (or reads a file it is given), so the
pages stay a description of the UI and everything they show can be unit-tested. Figures are
plotly `go.Figure`s; tables are pandas DataFrames ready for `st.dataframe`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .datasets import MURA_BODY_PARTS

NORMAL_COLOR = "#4C78A8"
ABNORMAL_COLOR = "#D1495B"
ENSEMBLE_COLOR = "#1F2937"
MEMBER_COLORS = ("#6B8BA4", "#9C7FB0", "#5E9E8C", "#C08A4A", "#8C8C8C", "#A86A6A")
THRESHOLD_COLOR = "#B45309"
LABEL_NAMES = {0: "normal", 1: "abnormal"}
LABEL_COLORS = {"normal": NORMAL_COLOR, "abnormal": ABNORMAL_COLOR}

OTHER_BODY_PART = "OTHER"
AUTO_BODY_PART = "auto"
BODY_PART_LABELS = {part: part.removeprefix("XR_").capitalize() for part in MURA_BODY_PARTS}
BODY_PART_LABELS[OTHER_BODY_PART] = "Other/unknown"
BODY_PART_CHOICES = (AUTO_BODY_PART, *MURA_BODY_PARTS, OTHER_BODY_PART)
"""Options of the body-part selector: detect from the images, MURA's seven parts, other."""

# DICOM BodyPartExamined defined terms (PS3.16 CID 4031 and common variants) -> MURA part.
_DICOM_BODY_PARTS = {
    "ELBOW": "XR_ELBOW", "FINGER": "XR_FINGER", "FINGERS": "XR_FINGER", "THUMB": "XR_FINGER",
    "FOREARM": "XR_FOREARM", "HAND": "XR_HAND", "HUMERUS": "XR_HUMERUS", "ARM": "XR_HUMERUS",
    "UPPER ARM": "XR_HUMERUS", "UPPERARM": "XR_HUMERUS", "SHOULDER": "XR_SHOULDER",
    "WRIST": "XR_WRIST",
}
_XR_NAME_RE = re.compile(r"XR_([A-Za-z]+)", re.IGNORECASE)

METRIC_LABELS = {
    "auc": "AUC",
    "accuracy": "Accuracy",
    "recall": "Sensitivity (recall)",
    "specificity": "Specificity",
    "precision": "Precision (PPV)",
    "f1": "F1",
    "kappa": "Cohen's kappa",
}
LEVEL_LABELS = {"image": "Image level", "study": "Study level"}
SAMPLE_COLUMNS = ("file", "study", "label", "body_part", "attribution")


# ----------------------------------------------------------------------------- weights folder


# Same as `ensemble.DEFAULT_WEIGHTS`, without importing Keras (pages that need no model stay light).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def weights_folder() -> Path:
    """The ensemble folder the app uses: `$MURA_WEIGHTS`, else the repository's `weights/`."""
    return Path(os.environ.get("MURA_WEIGHTS") or DEFAULT_WEIGHTS)


def report_path(folder: str | os.PathLike) -> Path:
    """The evaluation report installed with an ensemble: `report.json` or `report/report.json`."""
    for candidate in (Path(folder) / "report.json", Path(folder) / "report" / "report.json"):
        if candidate.is_file():
            return candidate
    return Path(folder) / "report" / "report.json"


def folder_stamp(folder: str | os.PathLike) -> str:
    """A key that changes when the ensemble in `folder` is replaced (manifest path + mtime)."""
    manifest = Path(folder) / "manifest.json"
    try:
        return f"{manifest.resolve()}:{manifest.stat().st_mtime_ns}"
    except OSError:
        return f"{manifest}:missing"


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


def label_text(label: Any) -> str:
    """'abnormal' / 'normal' for labels given as 1/0, booleans or words; '' when unknown."""
    key = str(label).strip().lower()
    if key in {"1", "1.0", "true", "abnormal", "positive", "fractured"}:
        return "abnormal"
    if key in {"0", "0.0", "false", "normal", "negative", "not fractured", "not_fractured"}:
        return "normal"
    return ""


# ----------------------------------------------------------------------------------- body part


def body_part_label(code: str) -> str:
    """Human name of a body-part code ('XR_WRIST' -> 'Wrist'); other values title-cased."""
    if not code:
        return ""
    return BODY_PART_LABELS.get(code, str(code).replace("_", " ").strip().capitalize())


def normalize_body_part(value: str) -> str:
    """Map a MURA folder name, a DICOM BodyPartExamined value or a plain word to a MURA code.

    Returns:
        One of `MURA_BODY_PARTS`, the value upper-cased when it is some other body part, or ''.
    """
    text = str(value or "").strip().upper().replace("-", " ")
    if not text:
        return ""
    if text in MURA_BODY_PARTS:
        return text
    if f"XR_{text}" in MURA_BODY_PARTS:
        return f"XR_{text}"
    return _DICOM_BODY_PARTS.get(text, text)


def detect_body_part(names: Sequence[str], dicom_parts: Sequence[str] = ()) -> tuple[str, str]:
    """The study's body part as found in the data.

    DICOM BodyPartExamined values take precedence over MURA-style names (``XR_WRIST``) in the
    file names. When the images disagree, the most frequent part wins.

    Args:
        names: the images' file names.
        dicom_parts: BodyPartExamined of each image ('' when absent).

    Returns:
        (code, source): code is a MURA part, another upper-case body part or ''; source says
        where it was found ("DICOM BodyPartExamined", "file names") or is '' when not found.
    """
    found = [normalize_body_part(p) for p in dicom_parts if p and str(p).strip()]
    source = "DICOM BodyPartExamined"
    if not found:
        found = [f"XR_{m.group(1).upper()}" for n in names if (m := _XR_NAME_RE.search(str(n)))]
        found = [normalize_body_part(p) for p in found]
        source = "file names"
    if not found:
        return "", ""
    counts = Counter(found)
    code = counts.most_common(1)[0][0]
    if len(counts) > 1:
        source += " (the images disagree; most frequent shown)"
    return code, source


def resolve_body_part(choice: str, detected: str, detected_source: str) -> tuple[str, str]:
    """The study's body part and where it comes from: the user's choice unless it is 'auto'."""
    if choice == AUTO_BODY_PART:
        return detected, detected_source
    return choice, "chosen by the user"


# ------------------------------------------------------------------------------------- verdict


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
    if probability >= threshold:
        return f"Abnormal (ensemble {value} ≥ threshold {limit})"
    return f"Normal (ensemble {value} < threshold {limit})"


def member_probability_figure(member_probabilities: Mapping[str, float], ensemble: float | None,
                              threshold: float, title: str = "Probability of 'abnormal', study level"
                              ) -> go.Figure:
    """Horizontal bars: each member's probability and the ensemble's, with the threshold marked.

    Args:
        member_probabilities: member name -> probability (the study mean).
        ensemble: the ensemble probability (mean of the members), or None.
        threshold: decision threshold, drawn as a dashed line.
        title: figure title.
    """
    names = list(member_probabilities)
    values = [member_probabilities[n] for n in names]
    colors = [MEMBER_COLORS[i % len(MEMBER_COLORS)] for i in range(len(names))]
    if ensemble is not None:
        names.append("Ensemble (mean)")
        values.append(ensemble)
        colors.append(ENSEMBLE_COLOR)
    fig = go.Figure(go.Bar(
        x=values, y=names, orientation="h", marker_color=colors,
        text=[f"{v:.3f}" for v in values], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    ))
    fig.add_vline(x=threshold, line_dash="dash", line_color=THRESHOLD_COLOR,
                  annotation_text=f"threshold {threshold:.2f}", annotation_position="top",
                  annotation_font_color=THRESHOLD_COLOR)
    fig.update_layout(
        title=title, xaxis=dict(range=[0, 1.08], title="probability", tickformat=".1f"),
        yaxis=dict(autorange="reversed"), height=110 + 42 * len(names), showlegend=False,
        margin=dict(l=10, r=30, t=60, b=40),
    )
    return fig


def heatmap_panels(result, alpha: float, members: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """The pictures shown for one image: the original, the fused ensemble map, each member's map.

    Args:
        result: an `ImageResult` (with `image` and, when explained, `heatmaps`).
        alpha: heatmap opacity, 0 to 1.
        members: member names, in display order.

    Returns:
        (caption, RGB or grayscale uint8 array) pairs; only the original when there is no heatmap.
    """
    from .gradcam import overlay

    panels: list[tuple[str, np.ndarray]] = [("Original", result.image)]
    if "ensemble" in result.heatmaps:
        panels.append((f"Ensemble (fused map) · p = {result.ensemble:.3f}",
                       overlay(result.image, result.heatmaps["ensemble"], alpha)))
    for name in members:
        if name in result.heatmaps:
            p = result.probabilities.get(name)
            caption = name if p is None else f"{name} · p = {p:.3f}"
            panels.append((caption, overlay(result.image, result.heatmaps[name], alpha)))
    return panels


def study_export(result, body_part: str = "", body_part_source: str = "") -> dict[str, Any]:
    """The study result as a JSON-ready dict: `StudyResult.to_dict()` for the study's body part, plus its name.

    No pixels and no DICOM attribute other than the body part are included.
    """
    out = result.with_body_part(body_part).to_dict()
    out["members"] = list(result.members)
    out["verdict_text"] = verdict_text(result.probability, result.threshold)
    out["study_body_part"] = body_part_label(body_part) or "unknown"
    out["study_body_part_source"] = body_part_source or ("not given" if not body_part else "")
    return out


def study_table(result, body_part: str = "") -> pd.DataFrame:
    """One row per image (`StudyResult.to_frame()`) with the threshold, the study body part and its warning."""
    frame = result.to_frame()
    frame["threshold"] = result.threshold
    frame["study_body_part"] = body_part_label(body_part) or "unknown"
    frame["study_warning"] = result.with_body_part(body_part).warning
    return frame


def study_json(result, body_part: str = "", body_part_source: str = "") -> str:
    """`study_export` serialised as indented JSON."""
    return json.dumps(study_export(result, body_part, body_part_source), indent=2)


# ------------------------------------------------------------------------------------- dataset


def _labelled(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["label_name"] = out["label"].map(LABEL_NAMES).fillna("unknown")
    out["split"] = out["split"].replace("", "(no split)").fillna("(no split)")
    out["body_part"] = out["body_part"].replace("", "(unknown)").fillna("(unknown)")
    return out


def dataset_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of an index table: images, studies, patients, abnormal shares, splits."""
    studies = table.groupby("study")["label"].max() if len(table) else pd.Series(dtype=int)
    patients = table["patient"].astype(str)
    patients = patients[patients.str.strip() != ""]
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
    data = _labelled(table)
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
    wide = wide.reindex(columns=[c for c in ("normal", "abnormal", "unknown") if c in wide.columns])
    wide["total"] = wide.sum(axis=1)
    wide.columns.name = None
    return wide.rename_axis(index=["split", "body part"])


def counts_figure(table: pd.DataFrame, unit: str = "images") -> go.Figure:
    """Bars of image (or study) counts per body part, normal vs abnormal, one panel per split.

    For MURA this is the dataset paper's distribution figure: images per body part in train and
    in valid, normal and abnormal side by side.
    """
    counts = count_frame(table, unit)
    counts["body_part"] = counts["body_part"].map(lambda p: body_part_label(p) if p != "(unknown)" else p)
    fig = px.bar(
        counts, x="body_part", y="count", color="label_name", facet_col="split", barmode="group",
        text="count", color_discrete_map=LABEL_COLORS,
        category_orders={"label_name": ["normal", "abnormal", "unknown"],
                         "body_part": sorted(counts["body_part"].unique())},
        labels={"body_part": "body part", "count": unit, "label_name": "label", "split": "split"},
    )
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("split=", "")))
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_layout(title=f"{unit.capitalize()} per body part and label", legend_title_text="",
                      margin=dict(t=70))
    return fig


def class_balance_figure(table: pd.DataFrame) -> go.Figure:
    """Share of abnormal and normal, for images and for studies, per split (100% stacked bars)."""
    data = _labelled(table)
    rows = []
    for split, part in data.groupby("split"):
        studies = part.groupby("study")["label"].max().map(LABEL_NAMES)
        for unit, labels in (("images", part["label_name"]), ("studies", studies)):
            for name, count in labels.value_counts().items():
                rows.append({"group": f"{split} · {unit}", "label_name": name, "count": int(count),
                             "share": count / len(labels)})
    frame = pd.DataFrame(rows)
    fig = px.bar(frame, x="share", y="group", color="label_name", orientation="h", text="count",
                 color_discrete_map=LABEL_COLORS, category_orders={"label_name": ["normal", "abnormal"]},
                 labels={"share": "share", "group": "", "label_name": ""},
                 custom_data=["count"])
    fig.update_traces(hovertemplate="%{y}: %{customdata[0]} (%{x:.1%})<extra></extra>")
    fig.update_layout(title="Class balance (bar text = count)", xaxis_tickformat=".0%", barmode="stack",
                      height=160 + 34 * frame["group"].nunique())
    return fig


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
    from PIL import Image

    rows = []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # DICOM or unreadable: try the DICOM header, else skip
            size = _dicom_size(path)
            if size is None:
                continue
            width, height = size
        rows.append({"path": str(path), "width": int(width), "height": int(height)})
    return pd.DataFrame(rows, columns=["path", "width", "height"])


def _dicom_size(path: str) -> tuple[int, int] | None:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    except Exception:
        return None


def image_size_figure(sizes: pd.DataFrame) -> go.Figure:
    """Scatter of image width against height, with histograms on the margins."""
    fig = px.scatter(sizes, x="width", y="height", marginal_x="histogram", marginal_y="histogram",
                     opacity=0.5, labels={"width": "width (px)", "height": "height (px)"},
                     color_discrete_sequence=[NORMAL_COLOR])
    fig.update_layout(title=f"Image size (pixels) of {len(sizes)} sampled images", height=430)
    return fig


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


def thumbnail(path: str, side: int = 160) -> np.ndarray | None:
    """A small grayscale copy of an image (longest side `side`), or None when it cannot be read."""
    from PIL import Image

    from .imaging import ImageLoadError, load_image

    try:
        with Image.open(path) as image:
            image.draft("L", (side, side))  # JPEG: decode at reduced size
            image = image.convert("L")
            image.thumbnail((side, side))
            return np.asarray(image)
    except Exception:
        pass
    try:
        gray = load_image(path)
    except ImageLoadError:
        return None
    image = Image.fromarray(gray)
    image.thumbnail((side, side))
    return np.asarray(image)


def problems_frame(problems: Sequence[Any]) -> pd.DataFrame:
    """Index problems (objects with `path` and `reason`) as a two-column table."""
    return pd.DataFrame([{"path": p.path, "reason": p.reason} for p in problems], columns=["path", "reason"])


# ---------------------------------------------------------------------------------- evaluation


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
    if not isinstance(report.get("image_level"), dict) and not isinstance(report.get("study_level"), dict):
        raise ReportError("the report has neither 'image_level' nor 'study_level' results")
    return report


def report_levels(report: Mapping[str, Any]) -> list[str]:
    """The levels with results, among "image" and "study"."""
    return [lv for lv in ("image", "study") if isinstance(report.get(f"{lv}_level"), dict)
            and report[f"{lv}_level"]]


def report_models(report: Mapping[str, Any], level: str = "image") -> list[str]:
    """Models with results at `level`: the members in report order, then "ensemble"."""
    results = report.get(f"{level}_level") or {}
    order = [*report.get("members", []), "ensemble"]
    known = [m for m in order if m in results]
    return known + [m for m in results if m not in known]


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def format_ci(value: Any, ci: Sequence[Any] | None = None, digits: int = 3) -> str:
    """'0.812 (0.781–0.840)'; '—' when the value is undefined; no interval when it is absent."""
    number = _number(value)
    if number is None:
        return "—"
    text = f"{number:.{digits}f}"
    if ci is not None and len(ci) == 2:
        low, high = _number(ci[0]), _number(ci[1])
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
    results = report.get(f"{level}_level") or {}
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
        if model in report[f"{level}_level"]:
            column = metrics_table(report, level, models=[model])[model]
            columns[LEVEL_LABELS[level]] = column.rename(index={"images": "n", "studies": "n"})
    frame = pd.DataFrame(columns)
    frame.index.name = "metric"
    return frame


def ci_figure(report: Mapping[str, Any], level: str = "study",
              metrics: Sequence[str] = ("auc", "kappa")) -> go.Figure:
    """Forest plot: each model's point estimate and 95% interval, one panel per metric."""
    results = report.get(f"{level}_level") or {}
    models = report_models(report, level)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS[m] for m in metrics],
                        shared_yaxes=True, horizontal_spacing=0.06)
    for col, metric in enumerate(metrics, start=1):
        xs, lows, highs, names = [], [], [], []
        for model in models:
            value = _number(results[model].get(metric))
            if value is None:
                continue
            low, high = (results[model].get("ci") or {}).get(metric, [None, None])
            low, high = _number(low), _number(high)
            xs.append(value)
            lows.append(value - low if low is not None else 0)
            highs.append(high - value if high is not None else 0)
            names.append(model)
        colors = [ENSEMBLE_COLOR if n == "ensemble" else MEMBER_COLORS[i % len(MEMBER_COLORS)]
                  for i, n in enumerate(names)]
        fig.add_trace(go.Scatter(
            x=xs, y=names, mode="markers", marker=dict(size=11, color=colors),
            error_x=dict(type="data", symmetric=False, array=highs, arrayminus=lows, color="#555"),
            hovertemplate="%{y}: %{x:.3f}<extra></extra>", showlegend=False,
        ), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=f"{LEVEL_LABELS.get(level, level)}: estimates with 95% bootstrap intervals",
                      height=150 + 40 * len(models), margin=dict(t=80))
    return fig


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


def per_body_part_figure(report: Mapping[str, Any], level: str = "image", metric: str = "auc") -> go.Figure:
    """Grouped bars of one metric per body part, one colour per model."""
    data = (report.get("per_body_part") or {}).get(level) or {}
    fig = go.Figure()
    models = [m for m in [*report.get("members", []), "ensemble"] if m in data] + \
        [m for m in data if m not in report.get("members", []) and m != "ensemble"]
    for i, model in enumerate(models):
        rows = [r for r in data[model] if r.get("body_part") != "ALL"]
        fig.add_trace(go.Bar(
            x=[body_part_label(r.get("body_part", "")) for r in rows],
            y=[_number(r.get(metric)) for r in rows], name=model,
            marker_color=ENSEMBLE_COLOR if model == "ensemble" else MEMBER_COLORS[i % len(MEMBER_COLORS)],
            hovertemplate=f"{model} · %{{x}}: %{{y:.3f}}<extra></extra>",
        ))
    fig.update_layout(barmode="group", title=f"{METRIC_LABELS.get(metric, metric)} per body part "
                      f"({LEVEL_LABELS.get(level, level).lower()})",
                      yaxis=dict(range=[0, 1] if metric != "kappa" else None,
                                 title=METRIC_LABELS.get(metric, metric)),
                      legend_title_text="model")
    return fig


def _model_color(model: str, index: int) -> str:
    return ENSEMBLE_COLOR if model == "ensemble" else MEMBER_COLORS[index % len(MEMBER_COLORS)]


def roc_figure(report: Mapping[str, Any], level: str = "image") -> go.Figure:
    """ROC curves of every model at `level`, AUC in the legend, chance diagonal."""
    curves = (report.get("roc") or {}).get(level) or {}
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(dash="dot", color="#999"), hoverinfo="skip"))
    models = [m for m in [*report.get("members", []), "ensemble"] if m in curves]
    for i, model in enumerate(models):
        curve = curves[model]
        if not curve.get("fpr"):
            continue
        auc = _number(curve.get("auc"))
        fig.add_trace(go.Scatter(
            x=curve["fpr"], y=curve["tpr"], mode="lines",
            name=f"{model} (AUC {auc:.3f})" if auc is not None else model,
            line=dict(color=_model_color(model, i), width=3 if model == "ensemble" else 1.8),
            hovertemplate="1 - specificity %{x:.3f}, sensitivity %{y:.3f}<extra></extra>",
        ))
    fig.update_layout(title=f"ROC curves ({LEVEL_LABELS.get(level, level).lower()})",
                      xaxis=dict(title="1 - specificity (false positive rate)", range=[0, 1],
                                 constrain="domain"),
                      yaxis=dict(title="sensitivity (true positive rate)", range=[0, 1.01],
                                 scaleanchor="x", scaleratio=1, constrain="domain"),
                      height=520, legend=dict(x=1.02, y=0.02, xanchor="left", yanchor="bottom"))
    return fig


def confusion_figure(entry: Mapping[str, Any], title: str = "") -> go.Figure:
    """2x2 confusion matrix (rows actual, columns predicted) from tp/fp/tn/fn of a result entry."""
    tn, fp, fn, tp = (int(entry.get(k) or 0) for k in ("tn", "fp", "fn", "tp"))
    z = [[tn, fp], [fn, tp]]
    total = max(tn + fp + fn + tp, 1)
    text = [[f"{v}<br>({v / total:.0%})" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=["predicted normal", "predicted abnormal"], y=["actual normal", "actual abnormal"],
        text=text, texttemplate="%{text}", colorscale="Blues", showscale=False,
        hovertemplate="%{y}, %{x}: %{z}<extra></extra>",
    ))
    threshold = _number(entry.get("threshold"))
    subtitle = f" at threshold {threshold:.2f}" if threshold is not None else ""
    fig.update_layout(title=f"{title}{subtitle}", yaxis=dict(autorange="reversed"), height=300,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def calibration_figure(report: Mapping[str, Any], level: str = "image") -> go.Figure:
    """Reliability diagram: observed abnormal rate against mean predicted probability per bin."""
    data = (report.get("calibration") or {}).get(level) or {}
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(dash="dot", color="#999"), hoverinfo="skip"))
    models = [m for m in [*report.get("members", []), "ensemble"] if m in data]
    for i, model in enumerate(models):
        entry = data[model]
        brier = _number(entry.get("brier"))
        fig.add_trace(go.Scatter(
            x=entry.get("prob_pred", []), y=entry.get("prob_true", []), mode="lines+markers",
            name=f"{model} (Brier {brier:.3f})" if brier is not None else model,
            customdata=entry.get("counts"),
            line=dict(color=_model_color(model, i), width=3 if model == "ensemble" else 1.8),
            hovertemplate="predicted %{x:.2f}, observed %{y:.2f}, n = %{customdata}<extra></extra>",
        ))
    fig.update_layout(title=f"Calibration ({LEVEL_LABELS.get(level, level).lower()})",
                      xaxis=dict(title="mean predicted probability", range=[0, 1]),
                      yaxis=dict(title="observed share abnormal", range=[0, 1]), height=460)
    return fig


def threshold_frame(report: Mapping[str, Any], level: str = "image") -> pd.DataFrame:
    """The ensemble's threshold table at `level`, sorted by threshold (empty when absent)."""
    rows = (report.get("threshold_table") or {}).get(level) or []
    frame = pd.DataFrame(rows)
    return frame.sort_values("threshold").reset_index(drop=True) if not frame.empty else frame


def threshold_at(frame: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """The threshold-table row nearest to `threshold`, as a dict."""
    index = (frame["threshold"] - threshold).abs().idxmin()
    return frame.loc[index].to_dict()


def threshold_figure(frame: pd.DataFrame, chosen: float, operating: float | None = None) -> go.Figure:
    """Sensitivity, specificity and precision against the threshold, chosen and operating points marked."""
    fig = go.Figure()
    styles = {"sensitivity": ABNORMAL_COLOR, "specificity": NORMAL_COLOR, "precision": "#5E9E8C"}
    for column, color in styles.items():
        if column in frame:
            values = frame[column]
            if column == "precision" and {"tp", "fp"} <= set(frame):
                values = values.where(frame["tp"] + frame["fp"] > 0)  # undefined where nothing is called abnormal
            fig.add_trace(go.Scatter(x=frame["threshold"], y=values, mode="lines", name=column,
                                     line=dict(color=color, width=2)))
    same = operating is not None and abs(chosen - operating) < 5e-4
    label = f"chosen = operating {chosen:.3f}" if same else f"chosen {chosen:.3f}"
    fig.add_vline(x=chosen, line_color=ENSEMBLE_COLOR, annotation_text=label, annotation_position="top left")
    if operating is not None and not same:
        fig.add_vline(x=operating, line_dash="dash", line_color=THRESHOLD_COLOR,
                      annotation_text=f"operating {operating:.3f}", annotation_position="top right",
                      annotation_font_color=THRESHOLD_COLOR)
    fig.update_layout(title="Trade-off against the decision threshold (ensemble)",
                      xaxis=dict(title="threshold", range=[0, 1]),
                      yaxis=dict(title="rate", range=[0, 1.02]), height=420, hovermode="x unified")
    return fig


def history_figure(report: Mapping[str, Any]) -> go.Figure:
    """Training curves per member: loss, then AUC (or accuracy), training solid and validation dashed."""
    history = report.get("history") or {}
    second = "auc" if any("auc" in h for h in history.values()) else "accuracy"
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss", "AUC" if second == "auc" else second])
    for i, (member, curves) in enumerate(history.items()):
        epochs = curves.get("epoch") or list(range(1, len(curves.get("loss", [])) + 1))
        color = MEMBER_COLORS[i % len(MEMBER_COLORS)]
        for col, key in ((1, "loss"), (2, second)):
            for prefix, dash in (("", "solid"), ("val_", "dash")):
                values = curves.get(prefix + key)
                if not values:
                    continue
                fig.add_trace(go.Scatter(
                    x=epochs[:len(values)], y=values, mode="lines",
                    name=f"{member} {'validation' if prefix else 'training'}",
                    legendgroup=member, showlegend=col == 1, line=dict(color=color, dash=dash),
                ), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Training history (solid: training, dashed: validation)", height=400)
    return fig


def localization_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """Pointing game (with 95% interval), mass in boxes and the chance level per model."""
    data = report.get("localization") or {}
    rows = {}
    for model, entry in data.items():
        rows[model] = {
            "images": entry.get("n"),
            "pointing game (hit rate)": format_ci(entry.get("pointing_game"), entry.get("pointing_game_ci")),
            "heatmap mass in boxes": format_ci(entry.get("mass_in_boxes")),
            "box area (chance level)": format_ci(entry.get("box_area_fraction")),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


def localization_figure(report: Mapping[str, Any]) -> go.Figure:
    """Bars per model: pointing-game hit rate (with interval), mass in boxes, and the chance level."""
    data = report.get("localization") or {}
    models = list(data)
    fig = go.Figure()
    pg = [_number(data[m].get("pointing_game")) for m in models]
    ci = [data[m].get("pointing_game_ci") or [None, None] for m in models]
    fig.add_trace(go.Bar(
        x=models, y=pg, name="pointing game (hit rate)", marker_color=ABNORMAL_COLOR,
        error_y=dict(type="data", symmetric=False,
                     array=[(_number(c[1]) or v or 0) - (v or 0) for c, v in zip(ci, pg)],
                     arrayminus=[(v or 0) - (_number(c[0]) or v or 0) for c, v in zip(ci, pg)]),
    ))
    fig.add_trace(go.Bar(x=models, y=[_number(data[m].get("mass_in_boxes")) for m in models],
                         name="heatmap mass in boxes", marker_color=NORMAL_COLOR))
    fig.add_trace(go.Scatter(x=models, y=[_number(data[m].get("box_area_fraction")) for m in models],
                             mode="markers", name="chance (box area share)",
                             marker=dict(symbol="line-ew-open", size=40, color=ENSEMBLE_COLOR,
                                         line=dict(width=3))))
    fig.update_layout(barmode="group", title="Localization against annotated boxes",
                      yaxis=dict(range=[0, 1], title="share"), height=400)
    return fig


def members_frame(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """The ensemble's members from its manifest: name, architecture, input size, checksum prefix."""
    rows = [{"member": m.get("name"), "architecture": m.get("architecture"),
             "input size (px)": m.get("input_size"), "Grad-CAM layer": m.get("gradcam_layer"),
             "sha256": str(m.get("sha256", ""))[:12]} for m in manifest.get("members", [])]
    return pd.DataFrame(rows)
