"""The Diagnose page's PACS source and its "send the result back" button.

Shown only when the operator configured a PACS (`MURA_PACS_URL`, see `mura_core.pacs`); browser users
never type a URL or a password. The study list shows accession number, date, description, body part,
modality and number of images: no patient name or ID. Opening a study puts its images where an upload
puts them (`st.session_state.study_files`), so the page shows the same result view.
"""

from __future__ import annotations

import streamlit as st

from mura_core.pacs import PacsClient, PacsConfig, PacsError, pacs_config

ORIGIN = "pacs"
_COLUMNS = {"accession": "Accession number", "date": "Date", "description": "Description",
            "body_part": "Body part", "modality": "Modality", "n_images": "Images"}


@st.cache_data(ttl=30, max_entries=16, show_spinner="Searching the PACS...")
def _studies(_config: PacsConfig, url: str, user: str, accession: str, since: str):
    """The PACS's study list for these filters, cached for half a minute (url and user are the key)."""
    return PacsClient(_config).list_studies(accession=accession, since=since)


def _open_study(config: PacsConfig) -> None:
    uid = st.session_state.get("pacs_pick")
    try:
        study = PacsClient(config).open_study(uid)
    except PacsError as exc:
        st.session_state.pacs_error = str(exc)
        return
    st.session_state.pacs_error = ""
    st.session_state.study_files = study.files
    st.session_state.study_origin = ORIGIN
    st.session_state.pacs_study = {"uid": study.uid, "accession": study.accession, "skipped": study.skipped}


def pacs_source() -> None:
    """The "PACS" source beside the upload: filters, the study list and an "Open from PACS" button.

    Draws nothing when no PACS is configured.
    """
    config = pacs_config()
    if config is None:
        return
    with st.expander("PACS", expanded=True, icon=":material/dns:"):
        st.caption(f"Studies on the PACS at {config.shown_url}. Patient names and IDs are never shown.")
        accession_col, date_col = st.columns(2)
        accession = accession_col.text_input("Accession number contains", key="pacs_accession")
        since = date_col.date_input("Studies since", value=None, key="pacs_since", format="YYYY-MM-DD")
        since_text = since.strftime("%Y%m%d") if since else ""
        try:
            studies = _studies(config, config.url, config.user, accession.strip(), since_text)
        except PacsError as exc:
            st.error(str(exc), icon=":material/cloud_off:")
            return
        if studies.empty:
            st.info("No study on the PACS matches these filters.")
            return
        st.dataframe(studies, hide_index=True, column_order=list(_COLUMNS),
                     column_config={key: st.column_config.Column(label) for key, label in _COLUMNS.items()})
        labels = {row.study_uid: f"{row.accession or '(no accession number)'} · {row.date} · {row.description}"
                  for row in studies.itertuples()}
        st.selectbox("Study", list(labels), format_func=labels.get, key="pacs_pick")
        st.button("Open from PACS", on_click=_open_study, args=(config,), icon=":material/download:")
        if st.session_state.get("pacs_error"):
            st.error(st.session_state.pacs_error, icon=":material/error:")


def pacs_caption() -> str:
    """What the page says it is showing for a study opened from the PACS (no patient identifier)."""
    study = st.session_state.get("pacs_study") or {}
    skipped = study.get("skipped") or []
    text = f"Showing PACS study **{study.get('accession') or study.get('uid', '')}**."
    if skipped:
        text += " Left out: " + "; ".join(f"{name} ({reason})" for name, reason in skipped) + "."
    return text


def send_results_button(result) -> None:
    """An explicit button that stores the result in the study: a DICOM SR and the heatmap captures."""
    from mura_core.installed import model_identity

    config = pacs_config()
    if config is None or st.session_state.get("study_origin") != ORIGIN:
        return
    if not st.button("Send the result to the PACS", icon=":material/upload:",
                     help="Stores a DICOM structured report and the fused heatmaps (secondary captures, "
                          "marked not for diagnosis) as new series in this study."):
        return
    sources = [data for _, data in st.session_state.study_files]
    try:
        stored = PacsClient(config).store_result(result, sources, model_identity())
    except (PacsError, ValueError) as exc:
        st.error(f"The result was not stored: {exc}", icon=":material/error:")
        return
    st.success(f"Stored in the PACS: a structured report and {stored - 1} heatmap image(s), "
               "as new series of this study.", icon=":material/check_circle:")

