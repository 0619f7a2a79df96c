"""Streamlit glue shared by the pages: cached engine objects and small display helpers.

Nothing here computes; it asks `core` and formats the answer.
"""

from __future__ import annotations

import streamlit as st

from core.weights import shipped_cards


@st.cache_data(show_spinner=False)
def shipped_models_table() -> list[dict]:
    rows = []
    for stem, card in shipped_cards().items():
        metrics = card.get("val_metrics") or card.get("metrics") or {}
        rows.append(
            {
                "name": stem,
                "kind": card.get("kind", ""),
                "parameters": card.get("parameter_count"),
                "size (MB)": round(card.get("file_size_bytes", 0) / 1e6, 2),
                "val balanced acc.": metrics.get("balanced_accuracy"),
                "val AUROC": metrics.get("auroc"),
                "trained on": card.get("training_data", card.get("data", "")),
            }
        )
    return rows
