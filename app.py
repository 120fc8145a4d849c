"""MURA radiograph screening dashboard: `streamlit run app.py`.

Four pages: Diagnose (landing), Dataset explorer, Evaluation and Model card. The ensemble comes
from `$MURA_WEIGHTS` or `weights/` and is loaded once per server process (see pages/_common.py).
"""

import streamlit as st

from mura_core.ensemble import DISCLAIMER

st.set_page_config(page_title="MURA radiograph screening", page_icon=":material/radiology:",
                   layout="wide")

pages = [
    st.Page("pages/diagnose.py", title="Diagnose", icon=":material/radiology:", default=True),
    st.Page("pages/dataset.py", title="Dataset explorer", icon=":material/photo_library:"),
    st.Page("pages/evaluation.py", title="Evaluation", icon=":material/monitoring:"),
    st.Page("pages/about.py", title="Model card", icon=":material/description:"),
]
page = st.navigation(pages)

with st.sidebar:
    st.caption(DISCLAIMER)

page.run()
