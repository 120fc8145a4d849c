"""Diagnose, the dashboard's landing page (`streamlit run app.py`): one study in, each model's probability,
the verdict and the heatmaps.

The other pages are in `pages/` (Streamlit's classic multipage layout, see dashboard/frame.py). The
frame, the title and the disclaimer are drawn first; pandas, plotly and TensorFlow are imported after
them, so the page is on screen at once and the first model load shows its progress.
"""

import functools
from pathlib import Path

import streamlit as st

from dashboard.frame import page_frame
from mura_core.notices import DISCLAIMER

page_frame("app.py")
st.title("Diagnose a study")
st.markdown(
    "A **study** is the set of radiographs (views) of one body part from one examination. "
    "Each model of the ensemble scores every image; the study's score is the mean over its images."
)
st.info(DISCLAIMER, icon=":material/info:")

# Imported after the first paint: these take seconds on a cold server.
from dashboard.common import INSTALL_HELP, LOG, download_section, get_ensemble, run_study  # noqa: E402
from dashboard.pacs_source import ORIGIN as PACS_ORIGIN  # noqa: E402
from dashboard.pacs_source import pacs_caption, pacs_source, send_results_button  # noqa: E402

ensemble, error = get_ensemble()
if ensemble is None:
    st.error(error, icon=":material/error:")
    st.markdown(INSTALL_HELP)
    st.stop()

from mura_core import body_parts, charts, decision, installed, vocabulary  # noqa: E402
from mura_core.imaging import MAX_STUDY_FILES, SUPPORTED_EXTENSIONS, study_limit_problem  # noqa: E402
from mura_core.vocabulary import CAM_METHODS, LESION_MAP  # noqa: E402

UPLOAD_TYPES = sorted(ext.lstrip(".") for ext in SUPPORTED_EXTENSIONS)
PANELS_PER_ROW = 4

folder = installed.weights_folder()
samples, sample_problems = installed.read_samples(folder)
studies = installed.sample_studies(samples)
descriptions = dict(zip(studies["study"], studies["description"]))


def _take_upload() -> None:
    uploads = st.session_state.get("uploads") or []
    st.session_state.study_files = tuple((f.name, f.getvalue()) for f in uploads)
    st.session_state.study_origin = "upload"


def _take_sample() -> None:
    study = st.session_state.sample_pick
    rows = samples[samples["study"] == study]
    st.session_state.study_files = tuple((Path(p).name, Path(p).read_bytes()) for p in rows["path"])
    st.session_state.study_origin = "sample"
    st.session_state.sample_study = study


upload_col, sample_col = st.columns([3, 2], gap="large")
with upload_col:
    st.file_uploader(
        "Radiographs of one study", type=UPLOAD_TYPES, accept_multiple_files=True, key="uploads",
        on_change=_take_upload,
        help=f"PNG, JPEG, DICOM (.dcm), TIFF, BMP, GIF, WebP or JPEG 2000, up to "
             f"{st.get_option('server.maxUploadSize')} MB each and {MAX_STUDY_FILES} files per study. Files "
             "are processed in memory and never saved.",
    )
with sample_col:
    if studies.empty:
        st.caption("No sample studies are installed with these weights.")
    else:
        shown = st.session_state.get("sample_study")
        options = list(studies["study"])
        st.selectbox("Sample study (for demonstrations)", options, key="sample_pick",
                     index=options.index(shown) if shown in options else 0, format_func=descriptions.get)
        st.button("Try a sample study", on_click=_take_sample, type="primary", icon=":material/play_arrow:")
    for problem in sample_problems:
        st.caption(problem)
pacs_source()  # the "PACS" source, when the operator configured one (MURA_PACS_URL)

part_col, method_col, alpha_col = st.columns(3, gap="large")
body_choice = part_col.selectbox(
    "Body part", body_parts.BODY_PART_CHOICES,
    format_func=lambda c: ("Detect from the images" if c == body_parts.AUTO_BODY_PART
                           else body_parts.body_part_label(c)),
    help="Taken from the DICOM attribute Body Part Examined or from MURA-style file names (XR_WRIST...) "
         "unless you choose it. It is recorded with the result; the models do not use it.",
)
methods = ensemble.cam_methods
method = method_col.selectbox(
    "Heatmap method", methods, index=methods.index(ensemble.default_cam_method), format_func=CAM_METHODS.get,
    help="Lesion map (when the models have one): each model's own map of where a fracture is, trained on "
         "annotated fracture boxes. Grad-CAM is fast. Grad-CAM++ and LayerCAM take a little longer. "
         "Score-CAM runs every model hundreds of times per image: expect minutes per study on a CPU.",
)
if method == "scorecam":
    method_col.caption(":orange[Score-CAM is slow: expect minutes per study on a CPU.]")
alpha = alpha_col.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05,
                         help="0 shows the radiograph only, 1 the heatmap only.")

files = st.session_state.get("study_files") or ()
if not files:
    st.info("Upload the radiographs of one study above, or choose a sample study and press "
            "**Try a sample study**.", icon=":material/upload_file:")
    st.stop()


def show_study(files: tuple[tuple[str, bytes], ...]) -> None:
    """The study's result: the verdict, the per-image table, the heatmaps with their regions, the downloads.

    A function, so its images and maps are freed when the run ends: a session keeps its last run's module
    globals for as long as it lives, and a closed one lives on for a while in case its browser reconnects.
    """
    origin = st.session_state.get("study_origin")
    sample_rows = None
    if origin == "sample":
        sample_rows = samples[samples["study"] == st.session_state.get("sample_study")]
    names = [name for name, _ in files]
    too_large = study_limit_problem([len(data) for _, data in files])
    if too_large:
        st.error(too_large, icon=":material/block:")
        st.stop()
    loading = (f"Loading TensorFlow and the models' Keras weights for {CAM_METHODS[method]} (once per server "
               f"process: it needs gradients the ONNX graphs do not give), then reading "
               if ensemble.needs_loading(method) else "Reading ")
    with st.spinner(f"{loading}{len(files)} image(s) with {len(ensemble.names)} models and computing "
                    f"{CAM_METHODS[method]} heatmaps..."):
        study = functools.partial(run_study, ensemble, installed.folder_stamp(folder), files, method)
        try:
            result = study()
        except Exception:  # never a traceback in the UI; the log keeps it
            LOG.exception("study failed")
            st.error("The study could not be processed. Check that the files are radiographs and try again.")
            st.stop()

    detected, detected_source = result.body_part, result.body_part_source  # detected once, by the ensemble
    if not detected and sample_rows is not None and len(sample_rows):
        detected, detected_source = body_parts.normalize_body_part(sample_rows["body_part"].iloc[0]), "sample list"
    body_part, body_part_source = body_parts.resolve_body_part(body_choice, detected, detected_source)
    result = result.with_body_part(body_part, body_part_source)  # its warning and downloads follow it

    st.divider()
    if origin == PACS_ORIGIN:
        st.caption(pacs_caption())
    elif origin == "sample" and sample_rows is not None:
        st.caption(f"Showing sample study **{st.session_state.sample_study}** ({len(files)} image(s)).")
    else:
        listed = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        st.caption(f"Showing the uploaded study: {listed}.")

    for image in result.images:
        if not image.ok:
            st.warning(f"**{image.name}** was not used: {image.error}", icon=":material/warning:")
        elif image.warning:
            st.warning(image.warning, icon=":material/palette:")
    if result.probability is None:
        st.error("None of the images could be read, so there is no verdict.")
        st.stop()

    outside = result.coverage_note
    if outside:
        st.warning(outside, icon=":material/block:")
    n_read = sum(r.ok for r in result.images)
    with st.container(border=True):
        verdict_col, facts_col = st.columns([5, 3], gap="large")
        if result.withheld:  # outside the coverage: no headline verdict (coverage.verdict_withheld)
            verdict_col.markdown(f"### :orange[{result.withheld}]")
            verdict_col.caption("The models were not trained on such studies, so their scores say nothing about "
                                "this one. Choose the body part above if it was detected wrongly.")
        else:
            color = "red" if result.verdict == vocabulary.LABEL_NAMES[1] else "blue"
            verdict_col.markdown(f"### :{color}[{decision.verdict_text(result.probability, result.threshold)}]")
            verdict_col.caption(
                f"Study score = mean over {n_read} readable image(s) of the ensemble probability, itself the mean "
                f"of {len(result.members)} models. The threshold comes with the installed ensemble."
            )
        part_text = body_parts.body_part_label(body_part) or "not detected - choose it above"
        facts_col.markdown(f"**Body part:** {part_text}" + (f" ({body_part_source})" if body_part else ""))
        facts_col.markdown(f"**Heatmaps:** {CAM_METHODS[method]}")
        if sample_rows is not None and len(sample_rows):
            reference = vocabulary.label_text(sample_rows["label"].iloc[0])
            if reference:
                facts_col.markdown(f"**Reference label (sample list):** {reference}")
        st.caption(DISCLAIMER)

    if result.withheld and not st.toggle(
            "Show the scores anyway (not meaningful for this study)", key="show_scores_anyway",
            help="The scores, heatmaps and per-image table of a study outside the model's training data. "
                 "They are not meaningful: for teaching and debugging only."):
        download_section(result, body_part, body_part_source, alpha, study)
        send_results_button(result)  # only for a study opened from the PACS
        st.stop()
    if result.withheld:
        st.caption(f":orange[{result.withheld}: the scores below are not meaningful.]")

    chart_col, table_col = st.columns(2, gap="large")
    positive = result.coverage.positive_label if result.coverage is not None else "abnormal"
    chart_col.plotly_chart(charts.member_probability_figure(
        result.member_probabilities, result.probability, result.threshold, f"Probability of '{positive}', study level"))
    with table_col:
        st.markdown("**Per image**")
        frame = result.to_frame()
        st.dataframe(frame[frame["ensemble"].notna()], hide_index=True,
                     column_order=["image", "ensemble", "verdict", "regions", "findings", *result.members],
                     column_config={**{m: st.column_config.NumberColumn(format="%.3f")
                                       for m in [*result.members, "ensemble"]},
                                    "regions": st.column_config.NumberColumn("regions", help="Suspected regions"),
                                    "findings": st.column_config.NumberColumn(
                                        "findings", help="Regions shown as findings (solid boxes)")})
        st.caption("Per-image verdicts use the same threshold; the study verdict above is what counts.")

    st.subheader("Where the models looked")
    if method == LESION_MAP:
        st.caption(
            "Lesion maps: each model's own estimate, per region, of the probability that a fracture lies there, "
            "learnt from annotated fracture boxes. Warm colours are higher probabilities (not rescaled: a faint "
            "map means the model sees no clear lesion). The ensemble map is the "
            + ("geometric mean of the members' maps: bright only where every model's map is. "
               if ensemble.heatmap_fusion == "geometric" else "mean of the members' maps. ") +
            "See the Evaluation page for how often the maps point inside the annotated boxes, and how well "
            "their values match how often an area held a fracture."
        )
    else:
        st.caption(
            f"{CAM_METHODS[method]} heatmaps: warm colours mark the regions that weighed most in each model's "
            "score. They show where the model looked, not where a lesion is, and can highlight normal anatomy, "
            "hardware or markers. The ensemble map is the mean of the members' maps."
        )
    reference_boxes = {}
    if sample_rows is not None and len(sample_rows):
        parsed = {row.file: installed.sample_boxes(row.boxes) for row in sample_rows.itertuples()}
        reference_boxes = {file: boxes for file, boxes in parsed.items() if boxes}
    show_boxes = bool(reference_boxes) and st.toggle(
        "Show the annotated fracture boxes", value=True,
        help="The sample list's reference boxes (FracAtlas annotations), drawn in green over every picture.")
    has_regions = any(r.regions for r in result.images)
    show_regions = has_regions and st.toggle(
        "Show the suspected regions", value=True, key="show_regions",
        help="Boxes read off the fused map, each with its score (orange). Solid: a finding, its score at or above "
             f"the ensemble's region threshold ({result.region_threshold or 0:.2f}) in a study with an abnormal "
             "verdict. Dashed: listed only, below that threshold, or in a study whose verdict is normal or withheld.")
    if result.region_threshold is None:
        st.caption(f"Suspected regions come from the {CAM_METHODS[ensemble.default_cam_method]} only: choose it above "
                   "to see them.")
    for number, image in enumerate([r for r in result.images if r.ok], start=1):
        st.markdown(f"**Image {number}: {image.name}** - ensemble probability {image.ensemble:.3f}")
        boxes = reference_boxes.get(image.name) if show_boxes else None
        regions = [(region, result.is_finding(region)) for region in image.regions] if show_regions else None
        if has_regions:
            findings = sum(result.is_finding(region) for region in image.regions)
            st.caption(f"{len(image.regions)} suspected region(s), {findings} shown as finding(s) (solid); "
                       + ("scores: " + ", ".join(f"{g.score:.2f}" for g in image.regions) if image.regions else
                          "the map holds no region."))
        panels = charts.heatmap_panels(image, alpha, result.members, boxes, regions)
        for start in range(0, len(panels), PANELS_PER_ROW):
            row = panels[start:start + PANELS_PER_ROW]
            for column, (caption, picture) in zip(st.columns(PANELS_PER_ROW), row):
                column.image(picture, caption=caption, width="stretch")
        maps = charts.heatmap_names(image, result.members)
        if not maps:
            continue
        closer = st.expander(f"Look closely at image {number}: one map, large and zoomable", icon=":material/zoom_in:",
                             key=f"look_closely_{number}", on_change="rerun")  # drawn only while open
        if closer.open:
            with closer:
                shown = st.radio("Map", maps, format_func=charts.heatmap_label, horizontal=True,
                                 key=f"zoom_map_{number}")
                st.plotly_chart(charts.image_zoom_figure(image, shown, alpha, boxes, regions),
                                config=charts.ZOOM_CONFIG)
                st.caption("At the image's own resolution: drag a box or scroll to zoom in, pan with the toolbar, "
                           "double-click to see the whole image again. The + marks this map's peak (the pixel the "
                           "pointing game scores)" + ("; the green boxes are the annotations" if boxes else "")
                           + (f"; the {charts.REGION_NOTE}" if regions else "") + ".")

    if origin == "sample" and sample_rows is not None:
        attributions = sorted({a for a in sample_rows["attribution"] if a})
        if attributions:
            st.caption("Sample images: " + "; ".join(attributions))

    download_section(result, body_part, body_part_source, alpha, study)
    send_results_button(result)  # only for a study opened from the PACS


show_study(files)
