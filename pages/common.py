"""Streamlit glue shared by the pages: cached engine objects, image input and display helpers.

Nothing here computes; it asks `core` and formats the answer. Models are cached once per process
(`st.cache_resource`) and only ever used in eval mode; results are cached per input hash.
"""

from __future__ import annotations

import hashlib

import plotly.graph_objects as go
import streamlit as st
import torch

from core.attacks import THREAT_MODELS, AttackConfig
from core.data.gallery import gallery as gallery_samples
from core.data.locations import DATASET_LABELS, dataset_of
from core.errors import PurifyLabError
from core.io import load_image, to_model_input, to_pil
from core.lab import Reading, Timed, Verdict, attack_image, purify_image
from core.metrics import CLASS_NAMES
from core.models import create_classifier, list_classifiers, shipped_xray_classifiers
from core.purifiers import create_purifier
from core.weights import shipped_cards

CLASS_COLOURS = {"NORMAL": "#2e7d32", "PNEUMONIA": "#c62828"}
# Shared with the Gradio server (gradio_app.py): the gallery and the X-ray classifiers it offers.
gallery = st.cache_data(show_spinner=False)(gallery_samples)
available_classifiers = shipped_xray_classifiers


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
            row.update({
                "test balanced acc. [95 % CI]": _with_interval(test, "balanced_accuracy"),
                "test AUROC": _with_interval(test, "auroc"),
                "test sensitivity": round(test["sensitivity"].get("PNEUMONIA", 0.0), 3),
                "test specificity": round(test.get("specificity") or 0.0, 3),
                "test ECE": round(test.get("ece") or 0.0, 3),
                "val balanced acc.": round(val.get("balanced_accuracy") or 0.0, 3),
                "training (min)": card.get("training_minutes"),
            })
        elif val:
            row["val balanced acc." if dataset == "xray" else "val accuracy"] = round(
                val.get("balanced_accuracy" if dataset == "xray" else "accuracy") or 0.0, 3
            )
        row["size (MB)"] = round(card.get("file_size_bytes", 0) / 1e6, 2)
        group = DATASET_LABELS[dataset] if stem in list_classifiers() else "diffusion denoisers (the purifiers' networks)"
        tables.setdefault(group, []).append({key: value for key, value in row.items() if value not in (None, "")})
    return tables


@st.cache_resource(show_spinner="Loading the classifier ...")
def classifier(name: str) -> torch.nn.Module:
    return create_classifier(name).eval()


@st.cache_resource(show_spinner="Loading the purifier ...", max_entries=32)
def purifier(name: str, params: tuple[tuple[str, object], ...] = ()):
    return create_purifier(name, **dict(params)).eval()


def image_key(image: torch.Tensor) -> str:
    return hashlib.sha256(image.numpy().tobytes()).hexdigest()[:16]


@st.cache_data(show_spinner=False, max_entries=64)
def cached_attack(key: str, _image: torch.Tensor, classifier_name: str, attack: tuple, threat: str,
                  purifier_name: str, purifier_params: tuple, eot: int) -> Timed:
    """Attack once per (image, classifier, attack, threat); `_image` is identified by `key`."""
    substitute = classifier("substitute") if THREAT_MODELS[threat].needs_substitute else None
    return attack_image(
        classifier(classifier_name), _image, AttackConfig(**dict(attack)), threat=threat,
        purifier=purifier(purifier_name, purifier_params), substitute=substitute, eot=eot,
    )


@st.cache_data(show_spinner=False, max_entries=256)
def cached_purify(key: str, _image: torch.Tensor, purifier_name: str, params: tuple, seed: int = 0) -> Timed:
    return purify_image(purifier(purifier_name, params), _image, seed=seed)


def decode_upload(data: bytes, size: int) -> torch.Tensor | None:
    """An uploaded file as the model's input, or None after showing the one-line reason."""
    try:
        return to_model_input(load_image(data), size)
    except PurifyLabError as error:
        st.error(f"This file cannot be used: {error}")
        return None


def true_label_note(true_class: str | None) -> str:
    return f"true label: **{true_class}**" if true_class else "true label: unknown"


def show_image(image: torch.Tensor, caption: str) -> None:
    st.image(to_pil(image), caption=caption, width="stretch", clamp=True)


def reading_badge(reading: Reading) -> str:
    colour = "green" if reading.class_name == "NORMAL" else "red"
    return f":{colour}[**{reading.class_name}**] · {reading.confidence:.0%}"


def verdict_line(result: Verdict) -> str:
    colour = "green" if result.restored and result.correct is not False else "orange" if result.restored else "red"
    return f":{colour}[{result.text}]"


def probability_chart(readings: dict[str, Reading]) -> go.Figure:
    """Grouped bars: P(NORMAL) and P(PNEUMONIA) for each panel."""
    figure = go.Figure()
    for index, class_name in enumerate(CLASS_NAMES):
        figure.add_bar(
            name=class_name, x=list(readings), y=[r.probabilities[index] for r in readings.values()],
            marker_color=CLASS_COLOURS[class_name], text=[f"{r.probabilities[index]:.0%}" for r in readings.values()],
        )
    figure.update_layout(barmode="group", yaxis=dict(range=[0, 1], title="probability"), height=320,
                         margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.12))
    return figure
