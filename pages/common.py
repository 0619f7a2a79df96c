"""Streamlit glue shared by the pages: cached engine objects, image input and display helpers.

Nothing here computes; it asks `core` and formats the answer. Models are cached once per process
(`st.cache_resource`) and only ever used in eval mode; results are cached per input hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
import torch

from core.attacks import AttackConfig
from core.data.locations import DATASET_LABELS, dataset_of
from core.errors import PurifyLabError
from core.io import load_image, to_model_input, to_pil
from core.lab import Reading, Timed, attack_image, purify_image
from core.metrics import CLASS_NAMES
from core.models import create_classifier
from core.purifiers import create_purifier
from core.weights import WEIGHTS_DIR, shipped_cards

GALLERY_DIR = Path(__file__).resolve().parents[1] / "assets" / "gallery"
DATA_DIR = Path(os.environ.get("PURIFYLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLASS_COLOURS = {"NORMAL": "#2e7d32", "PNEUMONIA": "#c62828"}


@st.cache_data(show_spinner=False)
def shipped_models_table() -> list[dict]:
    rows = []
    for stem, card in shipped_cards().items():
        metrics = card.get("val_metrics") or card.get("metrics") or {}
        rows.append(
            {
                "name": stem,
                "trained on": DATASET_LABELS[dataset_of(stem)],
                "kind": card.get("kind", ""),
                "parameters": card.get("parameter_count"),
                "size (MB)": round(card.get("file_size_bytes", 0) / 1e6, 2),
                "val balanced acc.": metrics.get("balanced_accuracy"),
                "val AUROC": metrics.get("auroc"),
                "notes": card.get("summary", ""),
            }
        )
    return rows


def available_classifiers() -> list[str]:
    return [name for name in ("vit", "sevit", "student_cnn", "vit_at", "substitute") if (WEIGHTS_DIR / f"{name}.safetensors").is_file()]


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
    substitute = classifier("substitute") if threat == "transfer" else None
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


def gallery() -> dict[str, Path]:
    """Synthetic X-rays made by the project's own cold-diffusion model (scripts/make_gallery.py)."""
    return {f"synthetic #{path.stem.rsplit('_', 1)[-1]}": path for path in sorted(GALLERY_DIR.glob("synthetic_*.png"))}


def dataset_samples(limit_per_class: int = 6) -> dict[str, Path]:
    """Real X-rays from a configured data directory (never shipped with the app)."""
    folder = DATA_DIR / "chest_xray_pneumonia" / "train"
    samples = {}
    for class_name in CLASS_NAMES:
        for path in sorted((folder / class_name).glob("*.jpeg"))[:limit_per_class]:
            samples[f"{class_name.lower()} · {path.name}"] = path
    return samples


def show_image(image: torch.Tensor, caption: str) -> None:
    st.image(to_pil(image), caption=caption, width="stretch", clamp=True)


def reading_badge(reading: Reading) -> str:
    colour = "green" if reading.class_name == "NORMAL" else "red"
    return f":{colour}[**{reading.class_name}**] · {reading.confidence:.0%}"


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
