"""Figures for the dashboard and the reports: plotly `go.Figure`s, free of any Streamlit call.

Every function is a pure function of its arguments (a report dict, an index table, a study
result), so the pages stay a description of the UI and every figure can be unit-tested. Tables and
numbers come from the modules that own them (`reports`, `datasets.stats`, `decision`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .body_parts import body_part_label
from .datasets.stats import count_frame, labelled
from .heatmaps import heatmap_peak, overlay, resize_heatmap
from .reports import number_or_none, report_models
from .vocabulary import LABEL_NAMES, LEVEL_LABELS, LEVELS, METRIC_LABELS, level_key

NORMAL_COLOR = "#4C78A8"
ABNORMAL_COLOR = "#D1495B"
ENSEMBLE_COLOR = "#1F2937"
MEMBER_COLORS = ("#6B8BA4", "#9C7FB0", "#5E9E8C", "#C08A4A", "#8C8C8C", "#A86A6A")
THRESHOLD_COLOR = "#B45309"
LABEL_COLORS = {LABEL_NAMES[0]: NORMAL_COLOR, LABEL_NAMES[1]: ABNORMAL_COLOR}


def _model_color(model: str, index: int) -> str:
    return ENSEMBLE_COLOR if model == "ensemble" else MEMBER_COLORS[index % len(MEMBER_COLORS)]


# ------------------------------------------------------------------------------------- a study


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


DISPLAY_MAX_SIDE = 1024
"""Longest side of an image as the dashboard shows it (results keep the native resolution)."""


def display_copy(gray: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """`gray` shrunk (area interpolation) so that its longest side is at most `max_side`."""
    height, width = gray.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return gray
    return cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


BOX_COLOR = (0, 255, 0)
"""Reference boxes, on the small panels and the large view (RGB)."""
FUSED_LABEL = "Ensemble (fused map)"
PEAK_NOTE = "+ marks the peak"
ZOOM_CONFIG = {"scrollZoom": True, "displaylogo": False}
"""plotly's config for `heatmap_zoom_figure`: the mouse wheel zooms (drag pans or zooms, double-click resets)."""


def draw_boxes(rgb: np.ndarray, boxes: Sequence[Sequence[float]], scale: float = 1.0,
               color: tuple[int, int, int] = BOX_COLOR) -> np.ndarray:
    """A copy of an RGB (or gray) image with (x, y, w, h) boxes outlined; `scale` maps box pixels to it."""
    out = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb.copy()
    thickness = max(1, round(max(out.shape[:2]) / 300))
    for x, y, w, h in boxes:
        top_left = (round(x * scale), round(y * scale))
        bottom_right = (round((x + w) * scale), round((y + h) * scale))
        cv2.rectangle(out, top_left, bottom_right, color, thickness)
    return out


REGION_COLOR = (255, 140, 0)
"""Suspected regions (RGB): solid where a region is a finding, dashed where it is listed below the threshold."""
REGION_NOTE = "orange boxes: suspected regions (solid: finding, dashed: below threshold)"


def _dashed_rectangle(out: np.ndarray, top_left, bottom_right, color, thickness: int, dash: int) -> None:
    (x0, y0), (x1, y1) = top_left, bottom_right
    for a, b, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True), (y0, y1, x0, False),
                                    (y0, y1, x1, False)):
        for start in range(a, b, 2 * dash):
            end = min(start + dash, b)
            points = ((start, fixed), (end, fixed)) if horizontal else ((fixed, start), (fixed, end))
            cv2.line(out, *points, color, thickness)


def draw_regions(rgb: np.ndarray, regions: Sequence[tuple[Any, bool]], scale: float = 1.0,
                 color: tuple[int, int, int] = REGION_COLOR) -> np.ndarray:
    """A copy of an RGB (or gray) image with suspected regions outlined and their scores written beside them.

    Args:
        rgb: the picture.
        regions: (`regions.Region`, is a finding) pairs; a finding is drawn solid and thicker, the others
            dashed.
        scale: maps the regions' image pixels to the picture's.
        color: the outline's colour.
    """
    out = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb.copy()
    thickness = max(1, round(max(out.shape[:2]) / 300))
    font = max(0.35, max(out.shape[:2]) / 1400)
    for region, finding in regions:
        top_left = (round(region.x0 * scale), round(region.y0 * scale))
        bottom_right = (max(top_left[0] + 1, round(region.x1 * scale) - 1),
                        max(top_left[1] + 1, round(region.y1 * scale) - 1))
        if finding:
            cv2.rectangle(out, top_left, bottom_right, color, thickness + 1)
        else:
            _dashed_rectangle(out, top_left, bottom_right, color, thickness, max(3, 4 * thickness))
        text = f"{region.score:.2f}"
        (_, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        where = (top_left[0], top_left[1] - 3 if top_left[1] - 3 > height else bottom_right[1] + height + 3)
        cv2.putText(out, text, where, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(out, text, where, cv2.FONT_HERSHEY_SIMPLEX, font, color, max(1, thickness), cv2.LINE_AA)
    return out


def draw_peak(rgb: np.ndarray, peak: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """A copy of an RGB image with a white cross, outlined in black, on `peak` = (row, col) scaled by `scale`."""
    out = rgb.copy()
    center = (round(peak[1] * scale), round(peak[0] * scale))
    size = max(9, round(max(out.shape[:2]) / 16))
    thickness = max(1, round(max(out.shape[:2]) / 300))
    cv2.drawMarker(out, center, (0, 0, 0), cv2.MARKER_CROSS, size + 2, thickness + 2)
    cv2.drawMarker(out, center, (255, 255, 255), cv2.MARKER_CROSS, size, thickness)
    return out


def heatmap_names(result, members: Sequence[str]) -> list[str]:
    """The maps an image has, in display order: the fused map ("ensemble"), then each member's."""
    return [name for name in ("ensemble", *members) if name in result.heatmaps]


def heatmap_label(name: str) -> str:
    """How a map is named on screen: the fused map's label, or the member's name."""
    return FUSED_LABEL if name == "ensemble" else name


def heatmap_panels(result, alpha: float, members: Sequence[str],
                   boxes: Sequence[Sequence[float]] | None = None,
                   regions: Sequence[tuple[Any, bool]] | None = None) -> list[tuple[str, np.ndarray]]:
    """The pictures shown for one image: the original, the fused ensemble map, each member's map.

    Args:
        result: an `ImageResult` (with `image` and, when explained, `heatmaps`).
        alpha: heatmap opacity, 0 to 1.
        members: member names, in display order.
        boxes: reference lesion boxes (x, y, w, h) in the image's pixels, drawn on every panel.
        regions: suspected regions as (`regions.Region`, is a finding) pairs (`StudyResult.is_finding`),
            drawn with their scores on the original and the fused map (`draw_regions`).

    Returns:
        (caption, RGB or grayscale uint8 array) pairs at display size; only the original when there
        is no heatmap. The fused map's peak (`heatmaps.heatmap_peak` at the native resolution) is marked.
    """

    image = display_copy(result.image)
    scale = image.shape[0] / result.image.shape[0]

    def framed(picture):
        return draw_boxes(picture, boxes, scale) if boxes else picture

    def marked(picture):
        return draw_regions(picture, regions, scale) if regions else picture

    panels: list[tuple[str, np.ndarray]] = [("Original", marked(framed(image)))]
    if "ensemble" in result.heatmaps:
        fused = marked(framed(overlay(image, result.heatmaps["ensemble"], alpha)))
        caption = f"{FUSED_LABEL} · p = {result.ensemble:.3f}"
        peak = heatmap_peak(result.heatmaps["ensemble"], result.image.shape)
        if peak is not None:
            fused, caption = draw_peak(fused, peak, scale), f"{caption} · {PEAK_NOTE}"
        panels.append((caption, fused))
    for name in members:
        if name in result.heatmaps:
            p = result.probabilities.get(name)
            caption = name if p is None else f"{name} · p = {p:.3f}"
            panels.append((caption, framed(overlay(image, result.heatmaps[name], alpha))))
    return panels


def heatmap_zoom_figure(gray: np.ndarray, heatmap: np.ndarray, alpha: float,
                        boxes: Sequence[Sequence[float]] | None = None,
                        peak: tuple[int, int] | None = None, title: str = "",
                        regions: Sequence[tuple[Any, bool]] | None = None) -> go.Figure:
    """One heatmap over the radiograph, large and zoomable, at the image's own resolution.

    Args:
        gray: (H, W) uint8 image as stored (not the display copy): one figure pixel per image pixel.
        heatmap: (h, w) map in [0, 1], resized to the image.
        alpha: heatmap opacity, 0 to 1.
        boxes: reference boxes (x, y, w, h) in the image's pixels, drawn as rectangles.
        peak: (row, col) of the map's peak in the image's pixels (`heatmaps.heatmap_peak`), marked with
            its value on hover.
        title: figure title.
        regions: suspected regions as (`regions.Region`, is a finding) pairs: solid outlines for findings,
            dashed for the others, the score written at each box's corner.

    Returns:
        A plotly figure (show it with `ZOOM_CONFIG`): drag to zoom, wheel to zoom, double-click to reset.
    """
    heat = resize_heatmap(heatmap, gray.shape[:2])
    fig = px.imshow(overlay(gray, heat, alpha), binary_string=True)  # a PNG, not a list of numbers
    fig.update_traces(hovertemplate="x %{x}, y %{y}<extra></extra>")
    line = dict(color="rgb({}, {}, {})".format(*BOX_COLOR), width=2)
    for x, y, w, h in boxes or ():  # a box's edges lie between pixels: pixel i spans i - 0.5 .. i + 0.5
        fig.add_shape(type="rect", x0=x - 0.5, y0=y - 0.5, x1=x + w - 0.5, y1=y + h - 0.5, line=line)
    region_color = "rgb({}, {}, {})".format(*REGION_COLOR)
    for region, finding in regions or ():
        fig.add_shape(type="rect", x0=region.x0 - 0.5, y0=region.y0 - 0.5, x1=region.x1 - 0.5, y1=region.y1 - 0.5,
                      line=dict(color=region_color, width=3 if finding else 2, dash="solid" if finding else "dash"),
                      name=f"region {region.score:.2f}")
        fig.add_annotation(x=region.x0 - 0.5, y=region.y0 - 0.5, text=f"{region.score:.2f}", showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(color=region_color, size=13),
                           bgcolor="rgba(0, 0, 0, 0.6)")
    if peak is not None:
        row, col = peak
        for color, width, hover in (("black", 5, "skip"), ("white", 2.5, "all")):
            fig.add_trace(go.Scatter(
                x=[col], y=[row], mode="markers", name="peak", hoverinfo=hover,
                marker=dict(symbol="cross-thin-open", size=28, line=dict(color=color, width=width)),
                hovertemplate=f"peak of the map: x {col}, y {row}, value {heat[row, col]:.2f}<extra></extra>",
            ))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain",
                     autorange="reversed", scaleanchor="x", scaleratio=1)  # rows down, square pixels
    fig.update_layout(title=title, height=760, showlegend=False, dragmode="zoom",
                      margin=dict(l=0, r=0, t=40 if title else 0, b=0))
    return fig


def image_zoom_figure(result, name: str, alpha: float,
                      boxes: Sequence[Sequence[float]] | None = None,
                      regions: Sequence[tuple[Any, bool]] | None = None) -> go.Figure:
    """`heatmap_zoom_figure` of one of an image's maps ("ensemble" or a member's), that map's own peak marked.

    Args:
        result: an `ImageResult` with `image` and `heatmaps`.
        name: the map, one of `heatmap_names(result, ...)`.
        alpha: heatmap opacity, 0 to 1.
        boxes: reference boxes (x, y, w, h) in the image's pixels.
        regions: suspected regions as (`regions.Region`, is a finding) pairs, drawn over any map.
    """
    heatmap = result.heatmaps[name]
    peak = heatmap_peak(heatmap, result.image.shape)
    height, width = result.image.shape[:2]
    title = f"{heatmap_label(name)} · {result.name} · {width} × {height} px"
    if peak is not None:
        title += f" · {PEAK_NOTE}"
    return heatmap_zoom_figure(result.image, heatmap, alpha, boxes, peak, title, regions)


# ------------------------------------------------------------------------------------- a dataset


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
        category_orders={"label_name": [*LABEL_NAMES.values(), "unknown"],
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
    data = labelled(table)
    rows = []
    for split, part in data.groupby("split"):
        studies = part.groupby("study")["label"].max().map(LABEL_NAMES)
        for unit, labels in (("images", part["label_name"]), ("studies", studies)):
            for name, count in labels.value_counts().items():
                rows.append({"group": f"{split} · {unit}", "label_name": name, "count": int(count),
                             "share": count / len(labels)})
    frame = pd.DataFrame(rows)
    fig = px.bar(frame, x="share", y="group", color="label_name", orientation="h", text="count",
                 color_discrete_map=LABEL_COLORS, category_orders={"label_name": list(LABEL_NAMES.values())},
                 labels={"share": "share", "group": "", "label_name": ""},
                 custom_data=["count"])
    fig.update_traces(hovertemplate="%{y}: %{customdata[0]} (%{x:.1%})<extra></extra>")
    fig.update_layout(title="Class balance (bar text = count)", xaxis_tickformat=".0%", barmode="stack",
                      height=160 + 34 * frame["group"].nunique())
    return fig


def image_size_figure(sizes: pd.DataFrame) -> go.Figure:
    """Scatter of image width against height, with histograms on the margins."""
    fig = px.scatter(sizes, x="width", y="height", marginal_x="histogram", marginal_y="histogram",
                     opacity=0.5, labels={"width": "width (px)", "height": "height (px)"},
                     color_discrete_sequence=[NORMAL_COLOR])
    fig.update_layout(title=f"Image size (pixels) of {len(sizes)} sampled images", height=430)
    return fig


# -------------------------------------------------------------------------------- a report


def ci_figure(report: Mapping[str, Any], level: str = "study",
              metrics: Sequence[str] = ("auc", "kappa")) -> go.Figure:
    """Forest plot: each model's point estimate and 95% interval, one panel per metric."""
    results = report.get(level_key(level)) or {}
    models = report_models(report, level)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS[m] for m in metrics],
                        shared_yaxes=True, horizontal_spacing=0.06)
    for col, metric in enumerate(metrics, start=1):
        xs, lows, highs, names = [], [], [], []
        for model in models:
            value = number_or_none(results[model].get(metric))
            if value is None:
                continue
            low, high = (results[model].get("ci") or {}).get(metric, [None, None])
            low, high = number_or_none(low), number_or_none(high)
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
            y=[number_or_none(r.get(metric)) for r in rows], name=model,
            marker_color=ENSEMBLE_COLOR if model == "ensemble" else MEMBER_COLORS[i % len(MEMBER_COLORS)],
            hovertemplate=f"{model} · %{{x}}: %{{y:.3f}}<extra></extra>",
        ))
    fig.update_layout(barmode="group", title=f"{METRIC_LABELS.get(metric, metric)} per body part "
                      f"({LEVEL_LABELS.get(level, level).lower()})",
                      yaxis=dict(range=[0, 1] if metric != "kappa" else None,
                                 title=METRIC_LABELS.get(metric, metric)),
                      legend_title_text="model")
    return fig


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
        auc = number_or_none(curve.get("auc"))
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
    threshold = number_or_none(entry.get("threshold"))
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
        brier = number_or_none(entry.get("brier"))
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
    """Training curves per member: loss, then AUC (or accuracy), training solid and validation dashed.

    A member trained with a lesion map logs its classifier's metrics as `probability_auc`, ...: those
    are shown (its `loss` is the total, classification plus lesion map).
    """
    history = {member: {key.replace("probability_", ""): values for key, values in curves.items()}
               for member, curves in (report.get("history") or {}).items()}
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


def localization_figure(report: Mapping[str, Any]) -> go.Figure:
    """Bars per model: pointing-game hit rate (with interval), mass in boxes, and the chance level."""
    data = report.get("localization") or {}
    models = list(data)
    fig = go.Figure()
    pg = [number_or_none(data[m].get("pointing_game")) for m in models]
    ci = [data[m].get("pointing_game_ci") or [None, None] for m in models]
    fig.add_trace(go.Bar(
        x=models, y=pg, name="pointing game (hit rate)", marker_color=ABNORMAL_COLOR,
        error_y=dict(type="data", symmetric=False,
                     array=[(number_or_none(c[1]) or v or 0) - (v or 0) for c, v in zip(ci, pg)],
                     arrayminus=[(v or 0) - (number_or_none(c[0]) or v or 0) for c, v in zip(ci, pg)]),
    ))
    fig.add_trace(go.Bar(x=models, y=[number_or_none(data[m].get("mass_in_boxes")) for m in models],
                         name="heatmap mass in boxes", marker_color=NORMAL_COLOR))
    fig.add_trace(go.Scatter(x=models, y=[number_or_none(data[m].get("box_area_fraction")) for m in models],
                             mode="markers", name="chance (box area share)",
                             marker=dict(symbol="line-ew-open", size=40, color=ENSEMBLE_COLOR,
                                         line=dict(width=3))))
    fig.update_layout(barmode="group", title="Localization against annotated boxes",
                      yaxis=dict(range=[0, 1], title="share"), height=400)
    return fig


def froc_figure(report: Mapping[str, Any]) -> go.Figure:
    """The suspected regions' FROC curve (report key "detection"): lesion recall against false positives per
    image, over every image, with the recall at 0.5 and 1 false positive per image marked."""
    data = report.get("detection") or {}
    curve = data.get("froc") or {}
    fppi, recall = curve.get("fp_per_image") or [], curve.get("recall") or []
    thresholds = [t if t is not None else float("nan") for t in curve.get("threshold") or [None] * len(fppi)]
    fig = go.Figure(go.Scatter(
        x=fppi, y=recall, mode="lines", line_shape="hv", name="FROC", line=dict(color=ABNORMAL_COLOR),
        customdata=thresholds,
        hovertemplate="%{x:.2f} FP/image · recall %{y:.3f} · region score >= %{customdata:.3f}<extra></extra>",
    ))
    for rate, key in ((0.5, "recall_at_0.5_fp"), (1.0, "recall_at_1_fp")):
        if data.get(key) is not None:
            fig.add_trace(go.Scatter(x=[rate], y=[data[key]], mode="markers+text", name=f"{rate:g} FP/image",
                                     text=[f"{data[key]:.2f}"], textposition="top center",
                                     marker=dict(color=ENSEMBLE_COLOR, size=9)))
    top = max([2.0, *[x for x in fppi if x <= 8]])
    fig.update_layout(title=f"FROC of the suspected regions (AP@50 {number_or_none(data.get('ap50')) or 0:.3f})",
                      xaxis=dict(title="false positives per image", range=[0, top]),
                      yaxis=dict(title="recall of annotated boxes (IoU >= 0.5)", range=[0, 1.02]),
                      showlegend=False, height=400)
    return fig


def report_figures(report: Mapping[str, Any]) -> list[go.Figure]:
    """The report's figures, as the Evaluation page shows them: per level, ROC, calibration,
    per-body-part AUC and each model's confusion matrix; then localization and training history."""
    figures = []
    for level in LEVELS:
        results = report.get(level_key(level))
        if not results:
            continue
        figures.append(roc_figure(report, level))
        figures.append(calibration_figure(report, level))
        if (report.get("per_body_part") or {}).get(level):
            figures.append(per_body_part_figure(report, level, "auc"))
        figures += [confusion_figure(results[m], f"{m}, {LEVEL_LABELS[level].lower()}")
                    for m in report_models(report, level)]
    if report.get("localization"):
        figures.append(localization_figure(report))
    if report.get("detection"):
        figures.append(froc_figure(report))
    if report.get("history"):
        figures.append(history_figure(report))
    return figures


def write_figures(figures: Sequence[go.Figure], path: str | os.PathLike, title: str = "") -> Path:
    """Write figures into one HTML page (interactive; plotly.js is loaded from its CDN when opened)."""
    parts = [fig.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False)
             for i, fig in enumerate(figures)]
    path = Path(path)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                    f"<body><h2>{title}</h2>{''.join(parts)}</body></html>")
    return path


def write_report_figures(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """`report_figures` of a report written to one HTML page."""
    return write_figures(report_figures(report), path, "Evaluation report")
