"""Home: what the lab does, what is shipped, where to go next."""

import streamlit as st

from pages.common import shipped_models_table

st.title("PurifyLab")
st.markdown(
    "PurifyLab attacks chest X-ray classifiers with imperceptible adversarial perturbations and "
    "defends them by **purifying** the image with a diffusion model before it is classified. "
    "Every robustness figure states its **threat model**: what the attacker is assumed to know. "
    "It is a research tool for studying that trade-off, **not a diagnostic device**."
)

st.subheader("Shipped models")
table = shipped_models_table()
if table:
    st.dataframe(table, hide_index=True, width="stretch")
else:
    st.info("No trained weights are shipped in `weights/` yet: train them with `purifylab train ...`.")
