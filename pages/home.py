"""Home: what the lab does, where to start, and what the shipped models score on new patients."""

import streamlit as st

from core.data.locations import DATASET_LABELS
from pages.model_table import shipped_models_table

st.title("PurifyLab")
st.markdown(
    "PurifyLab attacks chest X-ray classifiers with small adversarial perturbations and "
    "defends them by **purifying** the image with a diffusion model before it is classified. "
    "Every robustness figure states its **threat model**: what the attacker is assumed to know. "
    "It is a research tool for studying that trade-off, **not a diagnostic device**."
)

st.subheader("Start here")
first, second, third = st.columns(3)
first.page_link("pages/walkthrough.py", label="**Clinician walkthrough**: one X-ray, attacked and purified, step by step", icon=":material/stethoscope:")
second.page_link("pages/lab.py", label="**Attack & purify lab**: every attack and purifier side by side", icon=":material/science:")
third.page_link("pages/tables.py", label="**Robustness tables**: the measured figures, with their threat model", icon=":material/table_chart:")

tables = shipped_models_table()
xray = tables.pop(DATASET_LABELS["xray"], [])
st.subheader("Shipped X-ray classifiers, measured on new patients")
st.caption(
    "Test = the public half of the official Kermany test cohort (301 X-rays of children never seen in "
    "training); val = a patient-disjoint 15 % of the training folder, where every choice (epoch, "
    "threshold, temperature) was made. Intervals are exact binomial (balanced accuracy: per-class, "
    "Bonferroni) or bootstrap (AUROC); ECE = expected calibration error after temperature scaling."
)
if xray:
    st.dataframe(xray, hide_index=True, width="stretch")
else:
    st.info("No trained X-ray classifier is shipped in `weights/` yet: train one with `purifylab train classifier`.")
if tables:
    with st.expander("Models for the papers' own data sets (MNIST, CIFAR-10 re-runs) and the diffusion purifiers"):
        for label, rows in tables.items():
            st.markdown(f"**{label}**")
            st.dataframe(rows, hide_index=True, width="stretch")
