"""PurifyLab as a Gradio app: classify, attack and purify one X-ray, in a browser or from gradio_client.

`purifylab serve` starts it; a Hugging Face Space with `sdk: gradio` runs this file (README). Every
button is also a named API endpoint (/classify, /attack, /purify, /attack_and_purify) that takes
the registry names of the classifier, attack and purifier, and returns, last, what it ran (the
classifier, the attack and its threat model, the purifier, conversions of an upload). The maths is
`core.lab`'s; this file only turns files into tensors, tensors into images and PurifyLabError into a
one-line gr.Error.
"""

from __future__ import annotations

import inspect
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial, wraps
from pathlib import Path

import gradio as gr
import torch

from core.attacks import AttackConfig, threat_model
from core.data.gallery import gallery, gallery_attribution
from core.defense import Defense, load_defense
from core.devices import device_name
from core.errors import PurifyLabError
from core.image_file import UPLOAD_EXTENSIONS
from core.io import MAX_UPLOAD_BYTES, load_image, to_model_input, to_pil
from core.lab import INTERACTIVE_ATTACKS, Reading, attack_image, interactive_settings, perturbation_norms, purify_image, read, verdict
from core.metrics import CLASS_NAMES
from core.models import create_classifier, shipped_xray_classifiers
from core.purifiers import PURIFIERS, create_purifier
from core.weights import reads_through_note

DEFAULT_CONCURRENCY = 2  # one job per core on the 2-core machines this runs on; the rest wait in the queue
QUEUE_SIZE = 32  # beyond this a request is refused at once ("queue is full") instead of waiting minutes
UPLOAD_LIFETIME_S = 600  # gradio writes uploads and outputs to its cache folder; each is deleted after 10 minutes
CACHE_SWEEP_S = 60  # how often gradio looks for cached files older than that
THREAT = "grey"  # the attacker sees the classifier only, never the purifier
REMEMBERED_SESSIONS = 4096  # browser sessions whose latest click is kept; beyond, the longest idle is forgotten and answered as an API caller
_device = torch.device("cpu")  # `purifylab serve --device` sets it before the first request


@cache
def _classifier(name: str) -> torch.nn.Module:
    return create_classifier(name).eval().to(_device)


@cache
def recommended_defense() -> Defense:
    """configs/defenses/recommended.yaml: the page opens on its classifier and purifier, as the Streamlit lab does."""
    return load_defense("recommended")


@cache
def lab_purifiers() -> dict[str, dict[str, object]]:
    """The lab's purifiers at its knobs at rest, by registry name: the recommended defense's first, then
    those a visitor runs in seconds on a CPU (core.lab: not the published DiffDefense, minutes an image)."""
    recommended = recommended_defense()
    offered: dict[str, dict[str, object]] = {recommended.purifier: dict(recommended.params)}
    for name, params in interactive_settings().items():
        offered.setdefault(name, dict(params))
    return offered


@cache
def _purifier(name: str):
    return create_purifier(name, **lab_purifiers()[name]).eval().to(_device)


def _offered(kind: str, name: object, choices: list[str]) -> str:
    """`name` if this server offers it, else one line listing what it does: the dropdowns refuse other
    names over HTTP, and a direct Python caller gets this line before anything loads."""
    if not isinstance(name, str) or name not in choices:
        raise PurifyLabError(f"{kind} {name!r} is not offered here; choose one of: {', '.join(choices)}")
    return name


def _source(upload: str | None, sample: str | None) -> tuple[str | Path, str | None, str]:
    """The uploaded file (it wins) or the gallery sample, its true class if known, and its name in the
    details (an upload's file name never goes there)."""
    if upload:
        return upload, None, "an upload (no true label)"
    if not sample:
        raise PurifyLabError("upload an X-ray or choose a sample")
    path, true_class = gallery()[_offered("sample", sample, list(gallery()))]
    return path, true_class, sample if true_class is None else f"{sample} (true label {true_class})"


def _model_input(file: str | Path, size: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The file as model input, with the loader's notes on what it changed (alpha, frames, DICOM scaling)."""
    loaded = load_image(file)
    return to_model_input(loaded, size).to(_device), loaded.notes


def _label(reading: Reading) -> dict[str, float]:
    return dict(zip(CLASS_NAMES, reading.probabilities, strict=True))


def _settings_text(name: str, params: dict[str, object]) -> str:
    """'cold_direct (Direct recon., depth 20)': a purifier by registry name, display name and settings."""
    return f"{name} ({', '.join([PURIFIERS.get(name).display_name, *(f'{key} {value}' for key, value in params.items())])})"


def _failure_note(clean: Reading, attacked: Reading, perturbation: float) -> str:
    """': found nothing ...' after the attack's line where it left the reading as it was, as the lab says
    it: the attacked panel would otherwise pass for an attack that worked."""
    if attacked.label != clean.label:
        return ""
    returned = "is the original" if perturbation == 0 else "is perturbed but reads the same"  # APGD may return the original, PGD its last try
    return f": found nothing within ε that changes the reading; the attacked image {returned}"


def _details(
    classifier: str,
    model: torch.nn.Module,
    image: str,
    notes: tuple[str, ...],
    attack: AttackConfig | None = None,
    failure: str = "",
    purifier: str | None = None,
) -> str:
    """What produced a result, one fact a line, returned beside it: the threat model stands next to every robustness number."""
    lines = [f"image: {image}", *(f"upload converted: {note}" for note in notes), f"classifier: {classifier}"]
    if note := reads_through_note(classifier, model.card):
        lines.append(note)
    if attack is not None:
        budget = attack.budget()
        steps = f"{budget['steps']} step{'s' if budget['steps'] != 1 else ''}"
        lines.append(f"attack: {attack.name}, {steps}, L∞ ε {attack.eps:g} ({attack.eps * 255:.3g}/255), seed {attack.seed}{failure}")
        purified = purifier is not None and PURIFIERS.get(purifier).changes_image  # `none` stands for no purifier
        threat = threat_model(THREAT).describe() if purified else "attacker sees the classifier only; no purifier in this answer"
        lines.append(f"threat model: {THREAT}-box, {threat}")
    if purifier is not None:
        lines.append(f"purifier: {_settings_text(purifier, lab_purifiers()[purifier])}")
    lines.append(f"device: {device_name(model)}")  # `serve --device cuda` draws other purifier noise than the CPU
    return "\n".join(lines)


def _one_line_errors(handler):
    """A PurifyLabError becomes a gr.Error: the browser and gradio_client see its line, not a traceback."""

    @wraps(handler)  # gradio names the API parameters after the handler's signature
    def wrapped(*args):
        try:
            return handler(*args)
        except PurifyLabError as error:
            raise gr.Error(f"This input cannot be used: {error}", print_exception=False) from None

    return wrapped


@_one_line_errors
def classify(upload: str | None, sample: str | None, classifier: str):
    """The X-ray as the classifier sees it, its calibrated probabilities and what ran."""
    file, _, named = _source(upload, sample)
    model = _classifier(_offered("classifier", classifier, shipped_xray_classifiers()))
    image, notes = _model_input(file, model.image_size)
    return to_pil(image), _label(read(model, image)[0]), _details(classifier, model, named, notes)


@dataclass(frozen=True)
class AttackRun:
    """One grey-box attack as the answers show it: the classifier, the clean and attacked images, their
    readings, and the details of what ran, which take the purifier, if any, last."""

    model: torch.nn.Module
    image: torch.Tensor
    true_class: str | None
    adversarial: torch.Tensor
    clean: Reading
    attacked: Reading
    details: Callable[..., str]


def _attack(upload, sample, classifier, attack, eps) -> AttackRun:
    """Every name and the budget checked before anything loads, then the grey-box attack and both readings."""
    file, true_class, named = _source(upload, sample)
    config = AttackConfig(name=_offered("attack", attack, list(INTERACTIVE_ATTACKS.values())), eps=eps)  # AttackConfig refuses an eps that is not a number
    model = _classifier(_offered("classifier", classifier, shipped_xray_classifiers()))
    image, notes = _model_input(file, model.image_size)
    adversarial = attack_image(model, image, config, threat=THREAT)
    clean, attacked = read(model, torch.cat([image, adversarial.image]))
    failure = _failure_note(clean, attacked, perturbation_norms(adversarial.clean, adversarial.image)["linf"])
    return AttackRun(model, image, true_class, adversarial.image, clean, attacked, partial(_details, classifier, model, named, notes, config, failure))


@_one_line_errors
def attack(upload: str | None, sample: str | None, classifier: str, attack: str, eps: float):
    """Grey-box attack on the classifier's own reading: the attacked image, both readings and what ran."""
    run = _attack(upload, sample, classifier, attack, eps)
    return to_pil(run.adversarial), _label(run.clean), _label(run.attacked), run.details()


@_one_line_errors
def purify(upload: str | None, sample: str | None, classifier: str, purifier: str):
    """The purified image, the classifier's reading of it and what ran."""
    file, _, named = _source(upload, sample)
    model = _classifier(_offered("classifier", classifier, shipped_xray_classifiers()))
    defence = _purifier(_offered("purifier", purifier, list(lab_purifiers())))
    image, notes = _model_input(file, model.image_size)
    purified = purify_image(defence, image).image
    return to_pil(purified), _label(read(model, purified)[0]), _details(classifier, model, named, notes, purifier=purifier)


@_one_line_errors
def attack_and_purify(upload: str | None, sample: str | None, classifier: str, attack: str, eps: float, purifier: str):
    """The lab's question: does purification restore the reading the attack flipped?"""
    _offered("purifier", purifier, list(lab_purifiers()))
    run = _attack(upload, sample, classifier, attack, eps)
    defence, changes_image = _purifier(purifier), PURIFIERS.get(purifier).changes_image  # `none` is credited nothing
    purified = purify_image(defence, run.adversarial).image
    restored = read(run.model, purified)[0]
    # As the lab: the purifier's reading of the clean image, drawn as the attacked one is (seed 0), tells
    # a purifier that changes every reading on its own from one that undid the attack.
    alone = read(run.model, purify_image(defence, run.image).image)[0] if changes_image else None
    outcome = verdict(run.clean, run.attacked, restored, run.true_class, through_purifier=changes_image, purified_clean=alone)
    return (
        to_pil(run.image),
        to_pil(run.adversarial),
        to_pil(purified),
        _label(run.clean),
        _label(run.attacked),
        _label(restored),
        outcome.text,
        run.details(purifier=purifier),
    )


class LatestClicks:
    """Each browser session's latest request (the handler its button runs and that handler's inputs), by
    Gradio's session hash: noted at the click, before the run is queued, so a run that a newer click
    overtook drops its answer instead of painting an older image's result over the newer one's panels.

    gradio_client cannot call the private listener that notes clicks, so an API caller's answers,
    concurrent or not, are never dropped. Not a gr.State: any State makes every page and client hold a
    heartbeat connection, and one open at shutdown keeps gradio from emptying its cache (tests/test_serve.py).
    """

    def __init__(self, sessions: int = REMEMBERED_SESSIONS):
        self._latest: OrderedDict[str, tuple] = OrderedDict()
        self._sessions = sessions
        self._lock = threading.Lock()  # listeners run in gradio's worker threads

    def note(self, session: str, request: tuple) -> None:
        with self._lock:
            self._latest[session] = request
            self._latest.move_to_end(session)
            if len(self._latest) > self._sessions:
                self._latest.popitem(last=False)

    def overtaken(self, session: str, request: tuple) -> bool:
        with self._lock:
            return self._latest.get(session, request) != request


def _note_and_empty(handler, clicks: LatestClicks, stale: int):
    """A click's unqueued first step: notes `handler`'s request as the session's latest and empties the
    `stale` panels the run will not fill, so none shows an earlier run's result beside this one.
    Called directly, without a session, it only empties."""

    def start(session: gr.Request | None = None, *request) -> tuple[None, ...]:
        if session is not None:
            clicks.note(session.session_hash, (handler.__name__, request))
        return (None,) * stale

    return start


def _unless_overtaken(handler, clicks: LatestClicks):
    """`handler` as the page runs it: when its session clicked again while it ran, its answer changes no
    panel (gr.skip). Its API endpoint keeps `handler`'s parameters; gradio passes the session itself."""

    @wraps(handler)
    def answer(session: gr.Request, *request):
        result = handler(*request)
        return gr.skip() if clicks.overtaken(session.session_hash, (handler.__name__, request)) else result

    signature = inspect.signature(handler)
    session = inspect.Parameter("session", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    answer.__signature__ = signature.replace(parameters=[session, *signature.parameters.values()])
    answer.__annotations__ = {"session": gr.Request, **handler.__annotations__}  # gradio finds the session by annotation
    return answer


def _refused_by_core(slider: gr.Slider) -> gr.Slider:
    """`slider`, except that a value which is not a number goes on to the handler, where AttackConfig refuses it
    in one line; gradio's own refusal is a paragraph. Only API callers can send one: the browser's slider can't.
    A bool is an int to Python, and to gradio's bounds check True is 1, "greater than maximum value 0.1".
    (Not a Slider subclass: gradio writes a .pyi stub beside the file of every component class.)"""
    bounds_check = slider.preprocess
    slider.preprocess = lambda payload: bounds_check(payload) if isinstance(payload, int | float) and not isinstance(payload, bool) else payload
    return slider


def build() -> gr.Blocks:
    """The interface; each button is an API endpoint named after its function, and clears the result panels it does not fill."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # an X-ray server does not phone home
    samples, classifiers, purifiers = list(gallery()), shipped_xray_classifiers(), list(lab_purifiers())
    recommended = recommended_defense()
    opening_classifier = recommended.classifier if recommended.classifier in classifiers else next(iter(classifiers), None)
    with gr.Blocks(title="PurifyLab", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, UPLOAD_LIFETIME_S)) as demo:
        gr.Markdown(
            "# PurifyLab\nAttack a chest X-ray classifier, then purify the attack away. "
            "A research tool, not a diagnostic device. This server keeps uploads and results in its "
            f"cache folder for {UPLOAD_LIFETIME_S // 60} minutes, then deletes them."
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Upload an X-ray (PNG, JPEG, DICOM, ...)", file_types=list(UPLOAD_EXTENSIONS), type="filepath")
                sample = gr.Dropdown(samples, value=samples[0] if samples else None, label="…or a sample X-ray (used when nothing is uploaded)")
                gr.Markdown(gallery_attribution())
            with gr.Column():
                classifier = gr.Dropdown(classifiers, value=opening_classifier, label="Classifier")
                attack_name = gr.Dropdown(
                    list(INTERACTIVE_ATTACKS.items()), value=INTERACTIVE_ATTACKS["PGD"], label="Attack (grey-box: the attacker sees the classifier only)"
                )  # the lab's names shown, the registry's sent
                eps = _refused_by_core(gr.Slider(0.0, 0.1, value=0.03, step=0.005, label="Budget ε (L∞, pixel scale 0–1)"))
                purifier = gr.Dropdown(purifiers, value=recommended.purifier, label="Purifier")
        with gr.Row():
            buttons = [
                gr.Button(text, variant=variant)
                for text, variant in (("Classify", "secondary"), ("Attack", "secondary"), ("Purify", "secondary"), ("Attack, then purify", "primary"))
            ]
        with gr.Row():
            original_image, attacked_image, purified_image = (
                gr.Image(label=what, type="pil", format="png", image_mode="L") for what in ("Original", "Attacked", "Purified")
            )
        with gr.Row():
            clean_reading, attacked_reading, purified_reading = (
                gr.Label(label=f"Reading: {what}", num_top_classes=2) for what in ("original", "attacked", "purified")
            )
        verdict_text = gr.Textbox(label="Verdict", interactive=False)
        details = gr.Textbox(label="What ran (classifier, attack, threat model, purifier, device)", interactive=False)

        clicks = LatestClicks()
        source = [upload, sample, classifier]
        panels = [original_image, attacked_image, purified_image, clean_reading, attacked_reading, purified_reading, verdict_text, details]
        events = (
            (classify, source, [original_image, clean_reading, details]),
            (attack, [*source, attack_name, eps], [attacked_image, clean_reading, attacked_reading, details]),
            (purify, [*source, purifier], [purified_image, purified_reading, details]),
            (attack_and_purify, [*source, attack_name, eps, purifier], panels),
        )
        for button, (handler, inputs, outputs) in zip(buttons, events, strict=True):
            # The browser runs a click's listeners in the order they are set, the next once the last has
            # answered: the request is noted before its run is queued. Unqueued and private: no endpoint.
            stale = [panel for panel in panels if panel not in outputs]
            button.click(_note_and_empty(handler, clicks, len(stale)), inputs, stale, queue=False, api_visibility="private", trigger_mode="multiple")
            # "multiple": a click while the last run is pending starts a new run (the default "once" ignored it,
            # and the pending run then answered for the inputs the visitor had since changed).
            button.click(_unless_overtaken(handler, clicks), inputs, outputs, api_name=handler.__name__, trigger_mode="multiple")
    return demo


def launch(host: str | None = None, port: int | None = None, concurrency: int = DEFAULT_CONCURRENCY, device: str = "cpu") -> None:
    """Serve with a bounded queue; host/port None take gradio's defaults (GRADIO_SERVER_NAME/PORT on a Space)."""
    global _device
    _device = torch.device(device)
    demo = build().queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a container stop closes as Ctrl-C does: cache emptied
    demo.launch(
        server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, show_error=True, ssr_mode=False, run_history=False
    )  # no X-ray kept in the browser's run history


if __name__ == "__main__":
    launch()
