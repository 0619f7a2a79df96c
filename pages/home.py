"""Home: what the lab does, where to start, and what the shipped models score on new patients."""

import streamlit as st

from core.data.locations import DATASET_LABELS
from pages.model_table import expander_captions, shipped_models_table
from pages.startup import through_app_navigation

through_app_navigation()

st.title("PurifyLab")
st.markdown(
    "PurifyLab attacks chest X-ray classifiers with small adversarial perturbations and "
    "defends them by **purifying** the image with a diffusion model before it is classified. "
    "Every robustness figure states its **threat model**: what the attacker is assumed to know. "
    "It is a research tool for studying that trade-off, **not a diagnostic device**."
)

st.subheader("Start here")
# A link's label is one line that Streamlit cuts off; the description beside it wraps as a caption.
for column, (page, label, icon, description) in zip(
    st.columns(3),
    (
        ("pages/walkthrough.py", "Clinician walkthrough", ":material/stethoscope:", "One X-ray, attacked and purified, step by step."),
        ("pages/lab.py", "Attack & purify lab", ":material/science:", "Every attack and purifier side by side."),
        ("pages/tables.py", "Robustness tables", ":material/table_chart:", "The measured figures, each with its threat model."),
    ),
    strict=True,
):
    column.page_link(page, label=f"**{label}**", icon=icon)
    column.caption(description)

tables = shipped_models_table()
xray = tables.pop(DATASET_LABELS["xray"], [])
st.subheader("Shipped X-ray classifiers, measured on new patients")
st.caption(
    "In this table, test = the public half of the official Kermany test cohort (301 X-rays of children never "
    "seen in training); val = a patient-disjoint 15 % of the X-ray training folder, where every choice (epoch, "
    "threshold, temperature) was made. Intervals are exact binomial (balanced accuracy: per-class, "
    "Bonferroni) or bootstrap (AUROC); ECE = expected calibration error after temperature scaling."
)
if xray:
    columns = {"model": st.column_config.TextColumn(pinned=True), "what": st.column_config.TextColumn(width="large")}
    st.dataframe(xray, hide_index=True, width="stretch", column_config=columns)
else:
    st.info("No trained X-ray classifier is shipped in `weights/` yet: train one with `purifylab train classifier`.")
if tables:
    with st.expander("Models for the papers' own data sets (MNIST, CIFAR-10 re-runs) and the diffusion purifiers"):
        captions = expander_captions()
        for label, rows in tables.items():
            st.markdown(f"**{label}**")
            if label in captions:  # a table with no figure read on a split needs none
                st.caption(captions[label])
            st.dataframe(rows, hide_index=True, width="stretch")
