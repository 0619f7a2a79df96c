"""PurifyLab: `streamlit run app.py`. Declares the pages; each page calls `core`, never re-implements it."""

import threading

import streamlit as st

st.set_page_config(page_title="PurifyLab", page_icon="🩻", layout="wide")


@st.cache_resource(show_spinner=False)
def warm_up_in_background() -> threading.Thread:
    """Once per server process: import the engine (torch, seconds) and load the first pages' models in
    a thread, so the home page renders at once and the walkthrough and lab find them ready."""

    def load() -> None:
        from pages.common import warm_up

        warm_up()

    thread = threading.Thread(target=load, name="purifylab-warm-up", daemon=True)
    thread.start()
    return thread


warm_up_in_background()

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
