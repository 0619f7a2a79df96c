"""Sweeps & detection: accuracy vs t* / depth, and attack-detection ROC curves, from stored results."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from core.data.locations import dataset_of
from core.paths import RESULTS_DIR
from core.tables.render import certified_figure, certified_resolution, curve_run_labels, curves_figure
from pages.startup import through_app_navigation

through_app_navigation()

st.title("Sweeps, detection & certified robustness")
st.markdown(
    "How much purification is enough? Each curve shows accuracy as the purifier's strength grows "
    "(*t\\**: how much noise the DDPM adds and removes; *depth*: how far the image is blurred), on clean "
    "and on attacked X-rays. Too little leaves the attack in place; too much erases the findings. "
    "Detection curves (ROC) show how well an attacked image can be told apart from a clean one; "
    "AUC = 1 is perfect, 0.5 is chance."
)

unreadable: dict[Path, None] = {}  # in the order found, each once (certify/ is read twice)


def _read(path: Path) -> object:
    """The JSON at `path`, or None, noted in `unreadable`: one truncated file (a full disk) broke the whole page."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        unreadable[path] = None
        return None


certified = [_read(path) for path in sorted((RESULTS_DIR / "certify").glob("*.json"))]
certified = [result for result in certified if isinstance(result, dict) and "per_image" in result]
if certified:
    st.subheader("Certified robustness (no attacker can do better)")
    st.caption(
        "Randomized smoothing, Cohen et al.'s CERTIFY: within the L2 radius (in [0, 1] pixels at the "
        f"classifier's {certified_resolution(certified)}) no perturbation, whatever the attacker knows, changes these answers. "
        "Commands and wall times: results/certify/README.md."
    )
    st.plotly_chart(certified_figure(certified), key="certified")

runs = []
# X-ray runs first, then the papers' MNIST and CIFAR-10 re-runs
for path in sorted(RESULTS_DIR.glob("*/*.json"), key=lambda p: (dataset_of(p.parent.name) != "xray", p.parent.name)):
    if path.name.endswith(".config.json"):
        continue
    document = _read(path)
    if not isinstance(document, dict):  # other reports (e.g. input-shift) share results/
        continue
    if any("sweep" in r or "detection" in r for r in document.get("results", [])):
        config_file = path.with_suffix(".config.json")
        config = _read(config_file) if config_file.is_file() else None
        runs.append((path, document, config.get("data") if isinstance(config, dict) else None))
# one entry per file: a re-run in another folder shares its title and is labelled apart, never in its place
documents = dict(zip(curve_run_labels([(path, document) for path, document, _ in runs]), runs, strict=True))
if unreadable:
    st.warning(f"Skipped {len(unreadable)} file(s) that are not readable JSON: {', '.join(str(path.relative_to(RESULTS_DIR)) for path in unreadable)}")

if not documents:
    st.info("No sweep or detection run is stored yet: run `purifylab sweep depth --purifier cold_blur --values 2,5,10,20`.")
    st.stop()

title = st.selectbox("Stored run", list(documents), key="curve_choice")
path, document, data = documents[title]
st.plotly_chart(curves_figure(document, data), key="curves")
with st.expander("Numbers and threat model"):
    st.markdown(path.with_suffix(".md").read_text())
st.download_button("CSV", path.with_suffix(".csv").read_bytes(), file_name=path.with_suffix(".csv").name, key="curves_csv")
