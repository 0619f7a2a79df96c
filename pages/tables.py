"""Robustness tables: the committed results of every preset, and a quick regeneration beside them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from core.errors import PurifyLabError
from core.paths import RESULTS_DIR
from core.tables import load_preset, preset_heading, run_preset
from pages.startup import through_app_navigation

through_app_navigation()

st.title("Robustness tables")
st.markdown(
    "Each table states its **threat model** in its caption: *grey* means the attacker saw the "
    "classifier only (the papers' protocol); *bpda-eot* and *white* are adaptive attackers who "
    "differentiate through the purifier and are the honest measure of a defence. Every number was "
    "measured by `purifylab table PRESET`; the sanity checks under each table flag gradient masking."
)

# One entry per results folder (two folders may hold the same preset at two scales, e.g. adaptive
# on all 301 X-rays and adaptive-limit64). A table is a Markdown file with its resolved config
# beside it, so a folder's README or notes are never shown as its table.
stored: dict[str, Path] = {}
for path in sorted(RESULTS_DIR.glob("*/*.md")):
    if path.with_name(f"{path.stem}.config.json").is_file() and (path.parent.name not in stored or path.stem == path.parent.name):
        stored[path.parent.name] = path
if not stored:
    st.info("No table has been committed yet: run `purifylab table quick`.")
else:
    # The adaptive table leads: grey-box tables only measure the weakest attacker.
    leading = [name for name in ("adaptive", "adaptive-limit64", "adaptive-convergence", "defense-selection") if name in stored]
    name = st.selectbox(
        "Stored table",
        leading + [n for n in stored if n not in leading],
        key="table_choice",
        help="adaptive: every defense against grey-box, BPDA+EOT and white-box attackers; the rest are the papers' grey-box protocols.",
    )
    path = stored[name]
    # A wide table scrolls sideways in its own box rather than running off the page's right edge.
    st.html("<style>[data-testid='stMarkdownContainer'] table {display: block; max-width: 100%; overflow-x: auto;}</style>")
    st.markdown(path.read_text())
    downloads = st.columns(3)
    # named after the folder: adaptive and adaptive-limit64 hold files of one name at two scales
    downloads[0].download_button("Markdown", path.read_bytes(), file_name=f"{name}.md", key="download_md")
    csv_path = path.with_suffix(".csv")
    if csv_path.is_file():
        downloads[1].download_button("CSV", csv_path.read_bytes(), file_name=f"{name}.csv", key="download_csv")

st.divider()
st.subheader("Regenerate the quick table")
st.caption(
    "Recomputes `quick` (Table 1 for the ViT, 32 X-rays of the test cohort, grey-box) from scratch in a "
    "fresh results store — about 3 minutes on 2 CPU cores; cancel with the button."
)
quick = preset_heading("quick")  # its data folder alone: building the whole preset imports torch (seconds)
data_missing = not Path(quick.data).is_dir()
if data_missing:
    st.warning(
        f"Regenerating needs the Kermany test X-rays, which are not shipped with the app: expected at "
        f"`{quick.data}`. Set the environment variable `PURIFYLAB_DATA` to the folder that holds "
        "`chest_xray_pneumonia/test` and restart the app."
    )
if st.button("Regenerate", key="regenerate", type="primary", disabled=data_missing):
    cancel = st.empty()  # gone once the run ends: a Cancel beside "Done" would offer nothing to cancel
    cancel.button("Cancel", key="cancel_regenerate")  # any click reruns the page, which stops this run
    with st.status("Computing the quick table …", expanded=True) as status, tempfile.TemporaryDirectory() as scratch:
        bar = st.progress(0.0, text="starting")

        def on_cell(done: int, total: int) -> None:
            bar.progress(done / total, text=f"{done}/{total} cells")

        try:
            quick_preset = load_preset(quick.name)
            outcome = run_preset(quick_preset, store_path=Path(scratch) / "results.sqlite", out_dir=Path(scratch) / "quick", progress=False, on_cell=on_cell)
        except PurifyLabError as error:  # a missing data set or weights, a broken preset: say why, keep the page alive
            status.update(label="Regeneration failed", state="error")
            st.error(f"Could not regenerate: {error}")
        else:
            status.update(label=f"Done: {len(outcome.computed)} cells computed", state="complete")
            st.session_state.regenerated = outcome.markdown
        cancel.empty()
if "regenerated" in st.session_state:
    new, old = st.columns(2)
    with new:
        st.markdown("**Regenerated now**")
        st.markdown(st.session_state.regenerated)
    with old:
        st.markdown("**Stored**")
        if (RESULTS_DIR / "quick" / "quick.md").is_file():
            st.markdown((RESULTS_DIR / "quick" / "quick.md").read_text())
