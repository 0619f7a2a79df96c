"""The shipped models' figures as the home page shows them: read from the model cards alone.

Torch-free on purpose: the home page renders while the engine is still importing in the background.
"""

from __future__ import annotations

import streamlit as st

from core.data.locations import DATASET_LABELS, dataset_of
from core.defense import load_defense
from core.weights import plain_training, reads_through, shipped_cards, training_time
from pages.startup import through_app_navigation


def _figure(value: float | None) -> str:
    """A card's figure, or "–" where the card lacks it: a made-up 0.000 reads as a measured one."""
    return "–" if value is None else f"{value:.3f}"


def _with_interval(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    low, high = (metrics.get("confidence_95") or {}).get(key) or (None, None)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if None not in (value, low, high) else _figure(value)


def _what(stem: str, card: dict) -> str:
    """The card's training in plain words, and whether the committed recommended defense is this model."""
    recommended = load_defense("recommended")
    role = ""
    if stem == recommended.classifier:
        role = "; recommended defense" if recommended.purifier == "none" else f"; recommended defense behind {recommended.purifier}"
    through = reads_through(card)
    return plain_training(card) + role + (f"; figures read through {through}" if through else "")


@st.cache_data(show_spinner=False)
def shipped_models_table() -> dict[str, list[dict]]:
    """Rows per data set: the test-cohort figures first (what a reader compares), then validation and the model's facts."""
    tables: dict[str, list[dict]] = {}
    for stem, card in shipped_cards().items():
        dataset = dataset_of(stem)
        test, val = card.get("test_metrics") or {}, card.get("val_metrics") or {}
        row: dict = {"model": stem}
        if test:
            row.update(
                {
                    "test balanced acc. [95 % CI]": _with_interval(test, "balanced_accuracy"),
                    "test AUROC [95 % CI]": _with_interval(test, "auroc"),
                    # the positive class is the card's second, whatever its folder's spelling ("pneumonia")
                    "test sensitivity": _figure((test.get("sensitivity") or {}).get(card["classes"][1])),
                    "test specificity": _figure(test.get("specificity")),
                    "test ECE": _figure(test.get("ece")),
                    "val balanced acc.": _figure(val.get("balanced_accuracy")),
                }
            )
        elif val:
            metric = "balanced_accuracy" if dataset == "xray" else "accuracy"
            row["val balanced acc." if dataset == "xray" else "val accuracy"] = _figure(val.get(metric))
        row["what"] = _what(stem, card)
        row["parameters"] = f"{card['parameter_count']:,}" if card.get("parameter_count") else None
        if test:
            row["training (min)"] = training_time(card)
        row["size (MB)"] = round(card.get("file_size_bytes", 0) / 1e6, 2)
        group = DATASET_LABELS[dataset] if "classes" in card else "diffusion denoisers (the purifiers' networks)"
        tables.setdefault(group, []).append({key: value for key, value in row.items() if value not in (None, "")})
    return tables


# A deep link to this helper on a fresh server runs it as a page (Streamlit's v1 pages folder):
# leave for app.py's declared pages instead of showing a blank one.
if __name__ == "__main__":
    through_app_navigation()
