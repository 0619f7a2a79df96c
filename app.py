"""PurifyLab: `streamlit run app.py`. Declares the pages; each page calls `core`, never re-implements it.

`python app.py [Streamlit options]` serves the same app from this process after starting the
engine's imports, so they are under way before the first visitor arrives (the Space runs it so).
"""

import os
import sys

import streamlit as st
from streamlit import runtime

from pages.startup import launch_arguments, start_warm_up

if __name__ == "__main__" and not runtime.exists():  # `python app.py`, not Streamlit running this script
    from streamlit.web import cli

    start_warm_up()
    sys.argv = ["streamlit", "run", __file__, *launch_arguments(sys.argv[1:], os.environ)]
    sys.exit(cli.main())

st.set_page_config(page_title="PurifyLab", page_icon="🩻", layout="wide")
start_warm_up()

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
