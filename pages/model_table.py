"""The shipped models' figures as the home page shows them: read from the model cards alone.

Torch-free on purpose: the home page renders while the engine is still importing in the background.
"""

from __future__ import annotations

import streamlit as st

from core.data.locations import DATASET_LABELS, dataset_of
from core.defense import load_defense
from core.weights import plain_training, reads_through, shipped_cards, training_time
from pages.startup import through_app_navigation

DENOISERS = "diffusion denoisers (the purifiers' networks)"


def _figure(value: float | None) -> str:
    """A card's figure, or "–" where the card lacks it: a made-up 0.000 reads as a measured one."""
    return "–" if value is None else f"{value:.3f}"


def _with_interval(value: float | None, interval: list[float | None] | None) -> str:
    """A card's figure with its 95 % interval: a point value alone overstates what a few hundred X-rays show."""
    low, high = interval or (None, None)
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
            intervals = test.get("confidence_95") or {}
            # the positive class is the card's second, whatever its folder's spelling ("pneumonia"); specificity
            # is the first class's recall, so the card keeps its interval as that class's sensitivity
            negative, positive = card["classes"][:2]
            row.update(
                {
                    "test balanced acc. [95 % CI]": _with_interval(test.get("balanced_accuracy"), intervals.get("balanced_accuracy")),
                    "test AUROC [95 % CI]": _with_interval(test.get("auroc"), intervals.get("auroc")),
                    "test sensitivity [95 % CI]": _with_interval((test.get("sensitivity") or {}).get(positive), intervals.get(f"sensitivity_{positive}")),
                    "test specificity [95 % CI]": _with_interval(test.get("specificity"), intervals.get(f"sensitivity_{negative}")),
                    "test ECE": _figure(test.get("ece")),
                    "val balanced acc.": _figure(val.get("balanced_accuracy")),
                }
            )
        elif val:
            metric = "balanced_accuracy" if dataset == "xray" else "accuracy"
            row["val balanced acc." if dataset == "xray" else "val accuracy"] = _figure(val.get(metric))
            row["val n"] = val.get("n")
        row["what"] = _what(stem, card)
        row["parameters"] = f"{card['parameter_count']:,}" if card.get("parameter_count") else None
        if test:
            row["training (min)"] = training_time(card)
        row["size (MB)"] = round(card.get("file_size_bytes", 0) / 1e6, 2)
        group = DATASET_LABELS[dataset] if "classes" in card else DENOISERS
        tables.setdefault(group, []).append({key: value for key, value in row.items() if value not in (None, "")})
    return tables


@st.cache_data(show_spinner=False)
def expander_captions() -> dict[str, str]:
    """Per table below the X-ray one, what its figures were read on, from the cards: the X-ray caption's
    patient-disjoint split is not the papers' data sets', and a figure without its split cannot be weighed."""
    splits: dict[str, set[str]] = {}
    for stem, card in shipped_cards().items():
        dataset = dataset_of(stem)
        if dataset != "xray" and "classes" in card and card.get("val_metrics") and not card.get("test_metrics"):
            data = card.get("data") or {}
            seed = f", seed {data['split_seed']}" if data.get("split_seed") is not None else ""
            split = f"`{data.get('folder', 'its data file')}` (split: {data.get('split', 'not recorded')}{seed})"
            splits.setdefault(DATASET_LABELS[dataset], set()).add(split)
    captions = {
        label: f"val accuracy is read on the validation part of {' and of '.join(sorted(sources))}; val n is its "
        "number of images. Their cards hold no test figure (docs/TRAINING.md gives their test parts)."
        for label, sources in splits.items()
    }
    captions[DENOISERS] = "A denoiser has no accuracy of its own: it is measured through the classifier that reads its output (Robustness tables)."
    return captions


# A deep link to this helper on a fresh server runs it as a page (Streamlit's v1 pages folder):
# leave for app.py's declared pages instead of showing a blank one.
if __name__ == "__main__":
    through_app_navigation()
