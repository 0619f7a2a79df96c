"""PurifyLab as a Gradio app: classify, attack and purify one X-ray, in a browser or from gradio_client.

`purifylab serve` starts it; a Hugging Face Space with `sdk: gradio` runs this file (README). Every
button is also a named API endpoint (/classify, /attack, /purify, /attack_and_purify) that takes
the registry names of the classifier, attack and purifier. The maths is `core.lab`'s; this file
only turns files into tensors, tensors into images and PurifyLabError into a one-line gr.Error.
"""

from __future__ import annotations

import os
import signal
from functools import cache, wraps

import gradio as gr
import torch

from core.attacks import ATTACKS, AttackConfig
from core.data.gallery import gallery, gallery_attribution
from core.errors import PurifyLabError
from core.image_file import UPLOAD_EXTENSIONS
from core.io import MAX_UPLOAD_BYTES, load_image, to_model_input, to_pil
from core.lab import Reading, attack_image, purify_image, read, verdict
from core.metrics import CLASS_NAMES
from core.models import create_classifier, shipped_xray_classifiers
from core.purifiers import create_purifier, list_purifiers

DEFAULT_CONCURRENCY = 2  # one job per core on the 2-core machines this runs on; the rest wait in the queue
QUEUE_SIZE = 32  # beyond this a request is refused at once ("queue is full") instead of waiting minutes
UPLOAD_LIFETIME_S = 600  # gradio writes uploads and outputs to its cache folder; each is deleted after 10 minutes
CACHE_SWEEP_S = 60  # how often gradio looks for cached files older than that
_device = torch.device("cpu")  # `purifylab serve --device` sets it before the first request


@cache
def _classifier(name: str) -> torch.nn.Module:
    return create_classifier(name).eval().to(_device)


@cache
def _purifier(name: str):
    return create_purifier(name).eval().to(_device)


def _linf_attacks() -> list[str]:
    """The registry's attacks that honour an L-inf eps (the minimal-perturbation ones ignore it)."""
    return [name for name in ATTACKS.names() if "linf" in ATTACKS.get(name).norms and ATTACKS.get(name).bounded]


def _image(upload: str | None, sample: str | None, size: int) -> tuple[torch.Tensor, str | None]:
    """The uploaded file (it wins) or the gallery sample as model input, with its true class if known."""
    if upload:
        return to_model_input(load_image(upload), size).to(_device), None
    if not sample:  # the dropdown refuses a name that is not a sample
        raise PurifyLabError("upload an X-ray or choose a sample")
    path, true_class = gallery()[sample]
    return to_model_input(load_image(path), size).to(_device), true_class


def _label(reading: Reading) -> dict[str, float]:
    return dict(zip(CLASS_NAMES, reading.probabilities, strict=True))


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
    """The X-ray as the classifier sees it and its calibrated probabilities."""
    model = _classifier(classifier)
    image, _ = _image(upload, sample, model.image_size)
    return to_pil(image), _label(read(model, image)[0])


def _attack(upload, sample, classifier, attack, eps):
    model = _classifier(classifier)
    config = AttackConfig(name=attack, eps=float(eps))  # validated before the image is read
    image, true_class = _image(upload, sample, model.image_size)
    return model, image, true_class, attack_image(model, image, config).image


@_one_line_errors
def attack(upload: str | None, sample: str | None, classifier: str, attack: str, eps: float):
    """Grey-box attack on the classifier's own reading: the attacked image and both readings."""
    model, image, _, adversarial = _attack(upload, sample, classifier, attack, eps)
    clean, attacked = read(model, torch.cat([image, adversarial]))
    return to_pil(adversarial), _label(clean), _label(attacked)


@_one_line_errors
def purify(upload: str | None, sample: str | None, classifier: str, purifier: str):
    """The purified image and the classifier's reading of it."""
    model = _classifier(classifier)
    defence = _purifier(purifier)
    image, _ = _image(upload, sample, model.image_size)
    purified = purify_image(defence, image).image
    return to_pil(purified), _label(read(model, purified)[0])


@_one_line_errors
def attack_and_purify(upload: str | None, sample: str | None, classifier: str, attack: str, eps: float, purifier: str):
    """The lab's question: does purification restore the reading the attack flipped?"""
    defence = _purifier(purifier)
    model, image, true_class, adversarial = _attack(upload, sample, classifier, attack, eps)
    purified = purify_image(defence, adversarial).image
    clean, attacked, restored = read(model, torch.cat([image, adversarial, purified]))
    return (
        to_pil(image),
        to_pil(adversarial),
        to_pil(purified),
        _label(clean),
        _label(attacked),
        _label(restored),
        verdict(clean, attacked, restored, true_class).text,
    )


def build() -> gr.Blocks:
    """The interface; each button is an API endpoint named after its function."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # an X-ray server does not phone home
    samples, classifiers, attacks, purifiers = list(gallery()), shipped_xray_classifiers(), _linf_attacks(), list(list_purifiers())
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
                classifier = gr.Dropdown(classifiers, value=classifiers[0] if classifiers else None, label="Classifier")
                attack_name = gr.Dropdown(attacks, value="pgd", label="Attack (grey-box: the attacker sees the classifier only)")
                eps = gr.Slider(0.0, 0.1, value=0.03, step=0.005, label="Budget ε (L∞, pixel scale 0–1)")
                purifier = gr.Dropdown(purifiers, value="cold_direct", label="Purifier")
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

        source = [upload, sample, classifier]
        events = (
            (classify, source, [original_image, clean_reading]),
            (attack, [*source, attack_name, eps], [attacked_image, clean_reading, attacked_reading]),
            (purify, [*source, purifier], [purified_image, purified_reading]),
            (
                attack_and_purify,
                [*source, attack_name, eps, purifier],
                [original_image, attacked_image, purified_image, clean_reading, attacked_reading, purified_reading, verdict_text],
            ),
        )
        for button, (handler, inputs, outputs) in zip(buttons, events, strict=True):
            button.click(handler, inputs, outputs, api_name=handler.__name__)
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
