"""Sweeps & detection: accuracy vs t* / depth, and attack-detection ROC curves, from stored results."""

from __future__ import annotations

import json

import streamlit as st

from core.data.locations import dataset_of
from core.paths import RESULTS_DIR
from core.tables.render import curves_figure

st.title("Sweeps & detection")
st.markdown(
    "How much purification is enough? Each curve shows accuracy as the purifier's strength grows "
    "(*t\\**: how much noise the DDPM adds and removes; *depth*: how far the image is blurred), on clean "
    "and on attacked X-rays. Too little leaves the attack in place; too much erases the findings. "
    "Detection curves (ROC) show how well an attacked image can be told apart from a clean one; "
    "AUC = 1 is perfect, 0.5 is chance."
)

documents = {}
# X-ray runs first, then the papers' MNIST and CIFAR-10 re-runs
for path in sorted(RESULTS_DIR.glob("*/*.json"), key=lambda p: (dataset_of(p.parent.name) != "xray", p.parent.name)):
    if path.name.endswith(".config.json"):
        continue
    document = json.loads(path.read_text())
    if not isinstance(document, dict):  # other reports (e.g. input-shift) share results/
        continue
    if any("sweep" in r or "detection" in r for r in document.get("results", [])):
        documents[document["title"]] = (path, document)

if not documents:
    st.info("No sweep or detection run is stored yet: run `purifylab sweep depth --purifier cold_blur --values 2,5,10,20`.")
    st.stop()

title = st.selectbox("Stored run", list(documents), key="curve_choice")
path, document = documents[title]
st.plotly_chart(curves_figure(document), key="curves")
with st.expander("Numbers and threat model"):
    st.markdown(path.with_suffix(".md").read_text())
st.download_button("CSV", path.with_suffix(".csv").read_bytes(), file_name=path.with_suffix(".csv").name, key="curves_csv")
