"""Evaluation: the installed (or an uploaded) report.json as tables and figures."""

import streamlit as st

from dashboard.frame import page_frame

page_frame("pages/evaluation.py")
st.title("Evaluation")

# Imported after the first paint: pandas and plotly take a second or two on a cold server.
from dashboard.common import read_report  # noqa: E402
from mura_core import charts, installed, reports, vocabulary  # noqa: E402
from mura_core.coverage import dataset_name  # noqa: E402
from mura_core.decision import DEFAULT_THRESHOLD  # noqa: E402

MISSING = "Not in this report."


def show_cases(cases: list[dict], caption) -> None:
    """The best, then the worst cases of a report's gallery, side by side, each with `caption(case)`."""
    for kind in ("best", "worst"):
        chosen = [case for case in cases if case["kind"] == kind]
        if chosen:
            st.markdown(f"**{kind.capitalize()}**")
            for column, case in zip(st.columns(len(chosen)), chosen):
                column.image(str(report_path.parent / case["picture"]), width="stretch", caption=caption(case))


folder = installed.weights_folder()
report_path = installed.report_path(folder)
uploaded = st.file_uploader("Upload a report.json (optional)", type=["json"],
                            help="Written by train.evaluate; by default the report next to the installed "
                                 "weights is shown.")
try:
    if uploaded is not None:
        report, origin = reports.load_report(uploaded.getvalue()), f"uploaded file {uploaded.name}"
    elif report_path.is_file():
        report, origin = read_report(str(report_path), report_path.stat().st_mtime), "the installed ensemble's report"
    else:
        st.info("No evaluation report is installed with the ensemble. `train.evaluate` writes "
                "it next to the ensemble; you can also upload one above.", icon=":material/info:")
        st.stop()
except reports.ReportError as exc:
    st.error(f"This report cannot be shown: {exc}", icon=":material/error:")
    st.stop()

data = report.get("data") or {}
threshold = report.get("threshold")
st.caption(
    f"Source: {origin} · created {report.get('created', '?')} · data: {dataset_name(data)} "
    f"({data.get('format', '?')}, split {data.get('split', '?')}, {data.get('n_images', '?')} images, "
    f"{data.get('n_studies', '?')} studies)"
    + (f" · decision threshold {threshold:.2f}" if isinstance(threshold, (int, float)) else "")
)
levels = reports.report_levels(report)
level = st.sidebar.segmented_control("Level of the figures", levels, default=levels[-1], required=True,
                                     format_func=vocabulary.LEVEL_LABELS.get,
                                     help="MURA's headline results are at study level (a study's score is "
                                          "the mean over its images).")
st.caption(f"Figures below: **{vocabulary.LEVEL_LABELS[level].lower()}** (change it in the sidebar).")

st.header("Models compared")
st.caption("Values with 95% bootstrap intervals in brackets; sensitivity is also called recall, precision "
           "is the positive predictive value. — marks a value that is undefined (e.g. a single class).")
for lv in levels:
    st.markdown(f"**{vocabulary.LEVEL_LABELS[lv]}**")
    st.dataframe(reports.metrics_table(report, lv))

st.header("Study-level agreement")
if "study" in levels:
    st.caption("Cohen's kappa between the model's study verdicts and the reference labels, as reported for "
               "MURA, and the AUC, each with its 95% bootstrap interval.")
    st.plotly_chart(charts.ci_figure(report, "study", ("auc", "kappa")))
else:
    st.caption("Not in this report: no study-level results (the data had no study ids).")

st.header("Per body part")
per_part = (report.get("per_body_part") or {}).get(level) or {}
if per_part:
    model_col, metric_col = st.columns(2)
    models = [m for m in reports.report_models(report, level) if m in per_part] or list(per_part)
    model = model_col.selectbox("Model", models, index=len(models) - 1)
    metric = metric_col.selectbox("Metric in the figure", list(vocabulary.METRIC_LABELS),
                                  format_func=vocabulary.METRIC_LABELS.get)
    st.plotly_chart(charts.per_body_part_figure(report, level, metric))
    st.markdown(f"**{model}**, every metric ({vocabulary.LEVEL_LABELS[level].lower()})")
    st.dataframe(reports.per_body_part_frame(report, level, model),
                 column_config={label: st.column_config.NumberColumn(format="%.3f")
                                for label in vocabulary.METRIC_LABELS.values()})
else:
    st.caption(MISSING)

st.header("ROC curves")
if (report.get("roc") or {}).get(level):
    st.plotly_chart(charts.roc_figure(report, level))
else:
    st.caption(MISSING)

st.header("Confusion matrices")
results = report.get(vocabulary.level_key(level)) or {}
models = reports.report_models(report, level)
if models:
    for start in range(0, len(models), 3):
        for column, model in zip(st.columns(3), models[start:start + 3]):
            column.plotly_chart(charts.confusion_figure(results[model], model), key=f"cm-{level}-{model}")
else:
    st.caption(MISSING)

st.header("Calibration")
if (report.get("calibration") or {}).get(level):
    st.caption("Points on the diagonal mean the probabilities can be read as frequencies; the Brier score "
               "is the mean squared error of the probabilities (lower is better).")
    st.plotly_chart(charts.calibration_figure(report, level))
else:
    st.caption(MISSING)

st.header("Threshold explorer")
table_level = level if not reports.threshold_frame(report, level).empty else "image"
table = reports.threshold_frame(report, table_level)
if not table.empty:
    if table_level != level:
        st.caption(f"This report has the threshold table at {vocabulary.LEVEL_LABELS[table_level].lower()} only.")
    operating = float(threshold) if isinstance(threshold, (int, float)) else DEFAULT_THRESHOLD
    options = table["threshold"].tolist()
    chosen = st.select_slider("Decision threshold (ensemble)", options,
                              value=reports.threshold_at(table, operating)["threshold"],
                              format_func=lambda t: f"{t:.3f}",
                              help="What-if only: the app's verdicts always use the installed threshold.")
    row = reports.threshold_at(table, chosen)
    cols = st.columns(5)
    cols[0].metric("Sensitivity", f"{row['sensitivity']:.3f}")
    cols[1].metric("Specificity", f"{row['specificity']:.3f}")
    cols[2].metric("Precision (PPV)", f"{row['precision']:.3f}")
    cols[3].metric("F1", f"{row['f1']:.3f}")
    cols[4].metric("Missed abnormal (FN)", f"{int(row['fn'])}", f"{int(row['fp'])} false alarms (FP)",
                   delta_color="off", delta_arrow="off")
    st.plotly_chart(charts.threshold_figure(table, chosen, operating))
else:
    st.caption(MISSING)

st.header("Training history")
if report.get("history"):
    st.plotly_chart(charts.history_figure(report))
else:
    st.caption(MISSING)

st.header("Localization")
if report.get("localization"):
    by_method = report.get("localization_by_method") or {}
    shown = report.get("localization_method", "gradcam")
    if len(by_method) > 1:
        shown = st.segmented_control("Heatmap", list(by_method), default=shown, required=True,
                                     format_func=vocabulary.CAM_METHODS.get)
    st.caption("Scored on the abnormal images with annotated boxes, at each image's native resolution. "
               "Pointing game: share of images whose heatmap peak falls inside a box. Mass in boxes: share "
               "of the heatmap inside the boxes. IoU: overlap of the map's region above half its peak with "
               "the boxes. The box area share is what a uniform heatmap would reach by chance.")
    st.dataframe(reports.localization_frame(report, shown))
    st.plotly_chart(charts.localization_figure({"localization": by_method.get(shown) or report["localization"]}))
    reliability = reports.map_reliability_frame(report)
    if not reliability.empty:
        st.subheader("Is the lesion map a probability?")
        st.caption("Every pixel of the normal images and of the abnormal ones with boxes, by the fused lesion "
                   "map's value there. Where the map reads as a probability, the mean value of a row equals the "
                   "share of its pixels inside an annotated box.")
        st.dataframe(reliability, hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in ("mean map value", "share inside a box")})
    st.subheader("Sanity check: model randomization")
    sanity = reports.sanity_frame(report)
    if sanity.empty:
        st.caption(MISSING)
    else:
        method = vocabulary.CAM_METHODS.get(report["sanity"]["method"], report["sanity"]["method"])
        st.caption(f"{method} maps of {report['sanity']['images']} test images as each member's weights are "
                   "re-initialised from the top (Adebayo et al., 2018). A rank correlation near 1 means the "
                   "map ignores the weights (an edge detector); near 0, the map depends on what was learnt.")
        st.dataframe(sanity, hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.2f")
                                    for c in ("rank correlation with the trained maps", "|rank correlation|")})
    gallery = [case for case in report.get("localization_gallery") or []
               if uploaded is None and (report_path.parent / case["picture"]).is_file()]
    if gallery:
        st.subheader("Best and worst cases")
        st.caption(f"Fused {vocabulary.CAM_METHODS.get(report.get('localization_method'), '')} map of test images "
                   "beside the original, annotated boxes in green; ranked by the heatmap's mass in the boxes.")
        show_cases(gallery, lambda case: f"{case['file']} · mass in boxes {case['mass']:.2f} · "
                                         f"{'hit' if case['hit'] else 'miss'} · p = {case['probability']:.2f}")
else:
    st.caption(f"{MISSING} (needs a dataset with lesion boxes, such as FracAtlas)")

st.header("Suspected regions as a detector")
detection = report.get("detection") or {}
if detection:
    st.caption("The boxes the Diagnose page draws, read off the fused lesion map, scored like a fracture detector "
               "over every image of the split, normal ones included: a region hits an annotated box at IoU >= 0.5 "
               "(COCO's matching; AP@[.50:.95] averages IoU 0.50 to 0.95), AP is the all-point interpolated "
               "area under precision against recall, and the FROC curve is the recall of annotated boxes "
               "against false positives per image as the region score threshold falls.")
    st.dataframe(reports.detection_frame(report), hide_index=True)
    st.plotly_chart(charts.froc_figure(report))
    region_cases = [case for case in report.get("detection_gallery") or []
                    if uploaded is None and (report_path.parent / case["picture"]).is_file()]
    if region_cases:
        st.subheader("Best and worst cases of the regions")
        st.caption("Annotated boxes in green (left) beside the suspected regions in orange (right), each with its "
                   "score: solid from the region threshold up, dashed below it; ranked by the best IoU of a region "
                   "with an annotated box.")
        show_cases(region_cases, lambda case: f"{case['file']} · best IoU {case['iou']:.2f} · "
                                              f"{case['regions']} region(s) · p = {case['probability']:.2f}")
else:
    st.caption(f"{MISSING} (needs a dataset with lesion boxes, such as FracAtlas, and `train.evaluate` of this "
               "version)")
