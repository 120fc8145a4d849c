"""Model card: intended use, training data, metrics, limitations, privacy and how to install weights."""

import streamlit as st

from dashboard.frame import page_frame
from mura_core.notices import DISCLAIMER, INTENDED_USE, LIMITATIONS, PRIVACY

page_frame("pages/about.py")
title_slot = st.empty()  # the card's title comes from the manifest, read below
title_slot.title("Model card")

# Imported after the first paint: pandas, plotly and Keras take seconds on a cold server.
from dashboard.common import INSTALL_HELP, read_report  # noqa: E402
from mura_core import installed, reports  # noqa: E402
from mura_core.coverage import Coverage, coverage_text, dataset_name  # noqa: E402
from mura_core.installed import SAMPLE_COLUMNS, EnsembleLoadError, read_manifest  # noqa: E402

folder = installed.weights_folder()
try:
    manifest = read_manifest(folder)
    manifest_error = ""
except EnsembleLoadError as exc:
    manifest, manifest_error = {}, str(exc)
info = manifest.get("info") or {}

title_slot.title(info.get("title") or "Model card")
st.info(DISCLAIMER, icon=":material/info:")

st.header("Intended use")
st.markdown(info.get("intended_use") or INTENDED_USE)

st.header("Models")
if manifest:
    st.markdown(reports.reading_text(manifest))
    st.dataframe(reports.members_frame(manifest), hide_index=True)
else:
    st.warning(f"No ensemble is installed. {manifest_error}", icon=":material/warning:")

st.header("Training data, license and attribution")
facts = {"Trained on": info.get("trained_on"), "License": info.get("license"),
         "Attribution": info.get("attribution")}
shown = {k: v for k, v in facts.items() if v}
for key, value in shown.items():
    st.markdown(f"**{key}:** {value}")
if not shown:
    st.caption("The installed weights do not describe their training data.")

st.header("Coverage")
st.markdown(coverage_text(Coverage.from_info(info)))

st.header("Metrics")
report_path = installed.report_path(folder)
report = None
if report_path.is_file():
    try:
        report = read_report(str(report_path), report_path.stat().st_mtime)
    except reports.ReportError as exc:
        st.warning(f"The installed ensemble's report cannot be read: {exc}")
if report:
    data = report.get("data") or {}
    st.caption(f"The ensemble on {dataset_name(data)} ({data.get('split', '?')} split, "
               f"{data.get('n_images', '?')} images, {data.get('n_studies', '?')} studies), from "
               "the installed ensemble's report; 95% bootstrap intervals in brackets. Details on the Evaluation "
               "page.")
    st.dataframe(reports.model_card_metrics(report, "ensemble"), width="content")
elif not report_path.is_file():
    st.caption("No evaluation report is installed with these weights.")

st.header("Limitations")
if info.get("limitations"):
    st.markdown(info["limitations"])
st.markdown(LIMITATIONS)

st.header("Privacy")
st.markdown(PRIVACY)

st.header("Installing other weights")
st.markdown(INSTALL_HELP)
st.markdown(f"A weights folder may also hold `samples/samples.csv` (columns `{', '.join(SAMPLE_COLUMNS)}`) "
            "with the sample images, and the `report.json` written by `train.evaluate`.")
