"""The shipped models' figures as the home page shows them: read from the model cards alone.

Torch-free on purpose: the home page renders while the engine is still importing in the background.
"""

from __future__ import annotations

import streamlit as st

from core.data.locations import DATASET_LABELS, dataset_of
from core.weights import shipped_cards, training_time


def _with_interval(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    low, high = (metrics.get("confidence_95") or {}).get(key) or (None, None)
    return f"{value:.3f} [{low:.2f}, {high:.2f}]" if low is not None and high is not None else f"{value:.3f}"


@st.cache_data(show_spinner=False)
def shipped_models_table() -> dict[str, list[dict]]:
    """Rows per data set: X-ray classifiers with their test-cohort and validation figures side by side."""
    tables: dict[str, list[dict]] = {}
    for stem, card in shipped_cards().items():
        dataset = dataset_of(stem)
        test, val = card.get("test_metrics") or {}, card.get("val_metrics") or {}
        row = {"model": stem, "what": card.get("training_kind") or card.get("kind") or "", "parameters": card.get("parameter_count")}
        if test:
            row.update(
                {
                    "test balanced acc. [95 % CI]": _with_interval(test, "balanced_accuracy"),
                    "test AUROC": _with_interval(test, "auroc"),
                    "test sensitivity": round(test["sensitivity"].get("PNEUMONIA", 0.0), 3),
                    "test specificity": round(test.get("specificity") or 0.0, 3),
                    "test ECE": round(test.get("ece") or 0.0, 3),
                    "val balanced acc.": round(val.get("balanced_accuracy") or 0.0, 3),
                    "training (min)": training_time(card),
                }
            )
        elif val:
            row["val balanced acc." if dataset == "xray" else "val accuracy"] = round(
                val.get("balanced_accuracy" if dataset == "xray" else "accuracy") or 0.0, 3
            )
        row["size (MB)"] = round(card.get("file_size_bytes", 0) / 1e6, 2)
        group = DATASET_LABELS[dataset] if "classes" in card else "diffusion denoisers (the purifiers' networks)"
        tables.setdefault(group, []).append({key: value for key, value in row.items() if value not in (None, "")})
    return tables
