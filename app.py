"""PurifyLab: `streamlit run app.py`. Declares the pages; each page calls `core`, never re-implements it."""

import streamlit as st

from pages.common import warm_up

st.set_page_config(page_title="PurifyLab", page_icon="🩻", layout="wide")
warm_up()

PAGES = {
    "PurifyLab": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/walkthrough.py", title="Clinician walkthrough", icon=":material/stethoscope:"),
        st.Page("pages/lab.py", title="Attack & purify lab", icon=":material/science:"),
        st.Page("pages/tables.py", title="Robustness tables", icon=":material/table_chart:"),
        st.Page("pages/curves.py", title="Sweeps & detection", icon=":material/show_chart:"),
    ],
}

st.navigation(PAGES).run()
