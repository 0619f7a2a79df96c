"""Streamlit glue shared by the pages: cached engine objects, image input and display helpers.

Nothing here computes; it asks `core` and formats the answer. Models are cached once per process
(`st.cache_resource`) and only ever used in eval mode; results are cached per input hash.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import NoReturn, TypeVar

import streamlit as st
import torch
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core.attacks import THREAT_MODELS, AttackConfig
from core.data.gallery import gallery as gallery_samples
from core.defense import load_defense
from core.errors import PurifyLabError
from core.evaluate import EvaluationConfig
from core.image_file import UPLOAD_EXTENSIONS
from core.io import load_image, to_model_input, to_pil
from core.jobs import CallCost, JobQueue, timed_calls
from core.lab import (
    DEFAULT_DEPTH,
    DEFAULT_RECON_STEPS,
    DEFAULT_T_STAR,
    Attacked,
    Reading,
    Timed,
    Verdict,
    attack_image,
    interactive_settings,
    purify_image,
    read,
    shown_percent,
)
from core.metrics import CLASS_NAMES
from core.models import create_classifier, shipped_xray_classifiers
from core.purifiers import PURIFIERS, create_purifier, planned_calls
from pages.startup import through_app_navigation

# Shared with the Gradio server (gradio_app.py): the gallery and the X-ray classifiers it offers.
gallery = st.cache_data(show_spinner=False)(gallery_samples)
available_classifiers = shipped_xray_classifiers
# The recommended defense (configs/defenses/recommended.yaml): its classifier is the lab's default
# and its purifier the first default panel, beside the papers' model-free "Blurred". The diffusion
# panels are one pick away: they need diffusers, seconds to import, which a first render never waits for.
RECOMMENDED = load_defense("recommended")
RECOMMENDED_PANEL = "Recommended: " + PURIFIERS.get(RECOMMENDED.purifier).display_name.lower()
DEFAULT_DEFENSE = (RECOMMENDED_PANEL, "Blurred")
WARMED_PANELS = ("One-shot DDPM",)  # loaded in the background after a first page has rendered
# Set when a page of this process has rendered: the diffusion stack's import (seconds of the GIL)
# would otherwise slow the first visitor's first page. Waited for at most PREFETCH_AFTER_S.
PAGE_RENDERED = threading.Event()
PREFETCH_AFTER_S = 20.0
# A job with more denoiser calls than this waits for a click and for its turn in the shared line.
LIGHT_CALLS = 1
# Seconds per 128-px denoiser call on 2 CPU cores, used until this server has measured its own: first
# guesses from the lab on this machine class (session 23: 40 one-shot calls of a bpda-eot attack took
# 15.5-15.7 s, 0.39 s a call; an attack's call runs the backward pass too, about three forwards).
FIRST_GUESS_CALL_S = {"purify": 0.15, "attack": 0.45}
HEAVY_RESULTS_KEPT = 16
# A visitor's last uploads, kept as model inputs (64 KB each at 128 px), never as the decoded file.
UPLOADS_KEPT = 4
IMAGE_MAX_PX = 256  # twice the models' 128 px input; narrower columns shrink an image to their width

# One torch thread per visitor's job unless the operator says otherwise: every session runs in its own
# thread, and two-thread jobs from a few visitors oversubscribe a 2-core CPU many times over.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


@st.cache_resource(show_spinner="Loading the classifier ...")
def classifier(name: str) -> torch.nn.Module:
    return create_classifier(name).eval()


def purifier_variants(depth: int, t_star: float, recon_steps: int) -> dict[str, tuple[str, tuple]]:
    """The lab's purifiers by display name: registry name and parameters at the current sliders, the
    recommended defense at its committed setting first."""
    variants = {RECOMMENDED_PANEL: (RECOMMENDED.purifier, tuple(sorted(RECOMMENDED.params.items())))}
    for name, params in interactive_settings(depth, t_star, recon_steps).items():
        variants[PURIFIERS.get(name).display_name] = (name, params)
    return variants


@st.cache_resource(show_spinner="Loading the purifier ...", max_entries=32)
def purifier(name: str, params: tuple[tuple[str, object], ...] = ()):
    return create_purifier(name, **dict(params)).eval()


def warm_up() -> None:
    """Load and run once what the walkthrough and the lab show first; once a page has rendered, the
    diffusion stack, so a first visitor waits for neither (`pages.startup` runs it once per server
    process, in the background)."""
    shipped = available_classifiers()
    for name in [name for name in dict.fromkeys((RECOMMENDED.classifier, "vit")) if name in shipped]:
        model = classifier(name)
        read(model, torch.rand(1, model.in_channels, model.image_size, model.image_size))
    sample = torch.rand(1, 1, 128, 128)
    variants = purifier_variants(DEFAULT_DEPTH, DEFAULT_T_STAR, DEFAULT_RECON_STEPS)
    for label in DEFAULT_DEFENSE:
        purify_image(purifier(*variants[label]), sample)
    PAGE_RENDERED.wait(PREFETCH_AFTER_S)
    for label in WARMED_PANELS:
        purify_image(purifier(*variants[label]), sample)


def denoiser_calls(name: str, params: tuple[tuple[str, object], ...] = ()) -> int:
    """A purifier's denoiser calls per image, known without loading it."""
    return planned_calls(name, **dict(params))


# The model transfer attacks are crafted on (a small CNN trained on the same X-rays), as the engine's evaluations take it.
SUBSTITUTE = EvaluationConfig.substitute


def image_key(image: torch.Tensor) -> str:
    return hashlib.sha256(image.numpy().tobytes()).hexdigest()[:16]


@st.cache_data(show_spinner=False, max_entries=64)
def cached_attack(
    key: str, _image: torch.Tensor, classifier_name: str, attack: tuple, threat: str, purifier_name: str, purifier_params: tuple, eot: int
) -> Attacked:
    """Attack once per (image, classifier, attack, threat); `_image` is identified by `key`."""
    substitute = classifier(SUBSTITUTE) if THREAT_MODELS[threat].needs_substitute else None
    return attack_image(
        classifier(classifier_name),
        _image,
        AttackConfig(**dict(attack)),
        threat=threat,
        purifier=purifier(purifier_name, purifier_params),
        substitute=substitute,
        eot=eot,
    )


@st.cache_data(show_spinner=False, max_entries=256)
def cached_purify(key: str, _image: torch.Tensor, purifier_name: str, params: tuple, seed: int = 0) -> Timed:
    model = purifier(purifier_name, params)
    with timed_calls(model, call_cost(), purifier_name):
        return purify_image(model, _image, seed=seed)


@st.cache_resource
def heavy_jobs() -> JobQueue:
    """The process-wide line for heavy jobs: one at a time, so light work from everyone keeps a core."""
    return JobQueue(slots=1)


@st.cache_resource
def call_cost(work: str = "purify") -> CallCost:
    """Measured seconds per denoiser call, kept apart for purifications and attacks (an attack's call
    also pays for the classifier's backward), so one never skews the other's first estimate."""
    return CallCost(FIRST_GUESS_CALL_S[work])


def estimate_text(cost: CallCost, kind: str, calls: int) -> str:
    """The cost of a heavy job before it starts: its denoiser calls, their time here, the line ahead."""
    seconds = cost.estimate(kind, calls)
    waiting = heavy_jobs().busy()
    queue = f", after {waiting} heavy job(s) already running or waiting" if waiting else ""
    basis = "measured on this server" if cost.measured() else "a first guess, not yet measured on this server"
    return f"{calls} denoiser calls, about {max(seconds, 1):.0f} s ({basis}){queue}"


def heavy_job(label: str, cost: CallCost, kind: str, calls: int, module: torch.nn.Module, compute: Callable[[], Timed]) -> Timed:
    """Run `compute` in its turn in the shared line, showing the place in line, then the progress in
    denoiser calls of `module`; the time per call is recorded in `cost` under `kind` for the next estimate."""
    bar = st.progress(0.0, text=f"{label}: starting")

    def waiting(ahead: int) -> None:
        bar.progress(0.0, text=f"{label}: waiting for the CPU, {ahead} heavy job(s) ahead of yours")

    def progressed(done: int) -> None:
        done = min(done, calls)
        left = cost.estimate(kind, calls - done)
        bar.progress(done / max(calls, 1), text=f"{label}: {done} of about {calls} denoiser calls, about {left:.0f} s left")

    with heavy_jobs().turn(on_wait=waiting), timed_calls(module, cost, kind, progressed):
        result = compute()
    bar.empty()
    return result


Kept = TypeVar("Kept")


def kept_in_session(store: str, key: Hashable, make: Callable[[], Kept], kept: int) -> Kept:
    """`make()` once per key for this visitor, in the session's memory: the last `kept` keys of `store`
    (per visitor, so a result made from one visitor's file is never shown to another, and it goes with the session)."""
    results = st.session_state.setdefault(store, {})
    if key not in results:
        results[key] = make()
        while len(results) > kept:
            results.pop(next(iter(results)))
    return results[key]


def session_result(job_key: tuple, make: Callable[[], Timed]) -> Timed:
    """This visitor's result of a heavy job, made once: kept in the session's memory (the last few)."""
    return kept_in_session("heavy_results", job_key, make, HEAVY_RESULTS_KEPT)


def upload_input(upload: UploadedFile, size: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The upload as the model's input, with what the loader changed. Decoded once per content and size,
    keyed by the SHA-256 of its bytes: every click reruns the page, and a large file took seconds to decode."""
    data = upload.getvalue()

    def decode() -> tuple[torch.Tensor, tuple[str, ...]]:
        loaded = load_image(data)
        return to_model_input(loaded, size), loaded.notes

    return kept_in_session("decoded_uploads", (hashlib.sha256(data).hexdigest(), size), decode, UPLOADS_KEPT)


SAMPLE_HELP = "Samples shipped with the app, real test-cohort X-rays first; an upload below takes their place until removed."


def uploaded(key: str) -> bool:
    """Whether the upload control `key` holds a file, known before it renders (from the last run), so
    the sample picker above it is disabled while an upload is shown (its help, SAMPLE_HELP, says the
    upload takes the samples' place; Streamlit keeps showing the last sample's name in it)."""
    return st.session_state.get(key) is not None


def keep_across_pages(*keys: str) -> None:
    """Streamlit forgets a widget's value once its page is left for another, while plain session state
    (a story's step) survives: call before the widgets, so a page resumed on return shows the choices
    it was left with, not the defaults. Each key's copy is refreshed on every run."""
    for key in keys:
        copy = f"kept_{key}"
        if key in st.session_state:
            st.session_state[copy] = st.session_state[key]
        elif copy in st.session_state:
            st.session_state[key] = st.session_state[copy]


def upload_field(key: str) -> UploadedFile | None:
    """The one upload control of the app's pages (the formats the loader decodes). Streamlit cuts the
    list of accepted formats to one line; it wraps here, so a half-page column shows all of them."""
    st.html("<style>[data-testid='stFileUploaderDropzoneInstructions'] span {white-space: normal;}</style>")
    return st.file_uploader("…or upload your own (PNG, JPEG, DICOM)", key=key, type=[extension.lstrip(".") for extension in UPLOAD_EXTENSIONS])


def chosen_image(
    upload: UploadedFile | None, sample: tuple[Path, str | None] | None, size: int, stop: Callable[[], NoReturn] = st.stop
) -> tuple[torch.Tensor, str | None]:
    """The upload (it wins; its true label is unknown) or the gallery sample, as the model's input with
    its true label. A file that cannot be used gets its one-line reason and the page stops there,
    through `stop` (a page may draw what must survive the stop first)."""
    if upload is not None:
        try:
            image, notes = upload_input(upload, size)
        except PurifyLabError as error:
            st.error(f"This file cannot be used: {error}")
            stop()
        if notes:  # what the loader changed (alpha flattened, first frame, DICOM scaling), said once
            st.caption("Upload converted: " + "; ".join(notes))
        return image, None
    if sample is None:
        st.info("No sample images are available: upload an X-ray above.")
        stop()
    path, true_class = sample
    return to_model_input(load_image(path), size), true_class


def research_notice() -> None:
    """The readings look like a diagnosis, and a shared link may land on any page: each page with readings says what they are."""
    st.caption(
        "Research tool, not a diagnostic device; a reading is not a diagnosis. Its percentage was checked for "
        "calibration on chest X-rays of the Kermany test cohort only: on any other image (an upload that is not "
        "such an X-ray, an attacked image) it is not a calibrated probability."
    )


def true_label_note(true_class: str | None) -> str:
    return f"true label: **{true_class}**" if true_class else "true label: unknown"


def show_image(image: torch.Tensor, caption: str) -> None:
    """The image at its column's width up to IMAGE_MAX_PX (a 128 px input gains nothing larger), so a
    half-page column does not push the walkthrough's Back / Next below the fold."""
    st.image(to_pil(image), caption=caption, width=IMAGE_MAX_PX, clamp=True)


def reading_badge(reading: Reading) -> str:
    colour = "green" if reading.class_name == "NORMAL" else "red"
    return f":{colour}[**{reading.class_name}**] · {shown_percent(reading.confidence)}"


def verdict_line(result: Verdict) -> str:
    """Green for a right reading (against the true label where known, else the clean reading), orange
    for a restored but wrong one, red otherwise."""
    right = result.correct if result.correct is not None else result.restored
    colour = "green" if right else "orange" if result.restored else "red"
    return f":{colour}[{result.text}]"


def probability_table(readings: dict[str, Reading]) -> str:
    """Every panel's class probabilities side by side, as a Markdown table: a chart here cost the
    browser 2-3 s per render on a 2-core machine."""
    header = "| panel | " + " | ".join(f"P({name})" for name in CLASS_NAMES) + " |"
    rows = [f"| {label} | " + " | ".join(shown_percent(p) for p in reading.probabilities) + " |" for label, reading in readings.items()]
    return "\n".join([header, "|---|" + "---:|" * len(CLASS_NAMES), *rows])


# A deep link to this helper on a fresh server runs it as a page (Streamlit's v1 pages folder):
# leave for app.py's declared pages instead of showing a blank one.
if __name__ == "__main__":
    through_app_navigation()
