"""The frame every page of the dashboard shares: page settings, the navigation and the disclaimer.

The dashboard uses Streamlit's classic multipage layout: `app.py` is the landing page (Diagnose) and
each file in `pages/` is a page with its own URL, so a link to `/dataset` opens the Dataset explorer
even as the first visit to a fresh server. Streamlit's automatic navigation names pages after their
files (`app`, `about`, ...), so it is switched off (`client.showSidebarNavigation = false` in
`.streamlit/config.toml`) and `page_frame` draws the navigation instead.

This module imports nothing but Streamlit and the disclaimer, so the frame is on screen before a
page imports pandas, plotly or TensorFlow.
"""

from __future__ import annotations

from typing import NamedTuple

import streamlit as st

from mura_core.notices import DISCLAIMER

APP_TITLE = "MURA radiograph screening"


class PageEntry(NamedTuple):
    """One page of the dashboard: its script (relative to `app.py`), title and icon."""

    script: str
    title: str
    icon: str


PAGES = (
    PageEntry("app.py", "Diagnose", ":material/radiology:"),
    PageEntry("pages/dataset.py", "Dataset explorer", ":material/photo_library:"),
    PageEntry("pages/evaluation.py", "Evaluation", ":material/monitoring:"),
    PageEntry("pages/about.py", "Model card", ":material/description:"),
)


def page_frame(script: str) -> PageEntry:
    """Set up the page whose script is `script`: browser title, wide layout, navigation, disclaimer.

    Call it first in every page, before any slow import.

    Args:
        script: the page's entry in `PAGES` (e.g. "pages/dataset.py").

    Returns:
        The page's `PageEntry`.
    """
    entry = next(p for p in PAGES if p.script == script)
    st.set_page_config(page_title=f"{entry.title} · {APP_TITLE}", page_icon=entry.icon, layout="wide")
    with st.sidebar:
        st.markdown(f"**{APP_TITLE}**")
        for page in PAGES:
            st.page_link(page.script, label=page.title, icon=page.icon)
        st.caption(DISCLAIMER)
    return entry
