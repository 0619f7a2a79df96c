"""`purifylab serve`: a real server answers gradio_client on each endpoint and refuses bad input in one line;
its handlers, called directly, say what they ran and refuse bad names before anything loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import gradio_app
from benchmarks.serve_latency import connect, free_port
from core.attacks import threat_model
from core.io import MAX_UPLOAD_BYTES, load_image
from core.metrics import CLASS_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "assets" / "gallery" / "real" / "pneumonia_1.png"
DETAILS = "What ran (classifier, attack, threat model, purifier, device)"  # the label of the output every endpoint returns last
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}

# The tests that start a server are slow (two server starts and a dozen requests: about 100 s on 2 busy
# cores); the handlers called directly take seconds.


@contextmanager
def _server(command: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[Client]:
    """The app started by `command` from the repository root, and a gradio_client connected to it."""
    with log.open("w") as sink:
        server = subprocess.Popen([sys.executable, *command], cwd=REPO_ROOT, env={**ENV, **(env or {})}, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield connect(port, server, log)
    finally:
        server.terminate()  # SIGTERM, as a container stop sends
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    """`python -m core serve` on a free local port; no upload or output outlives its shutdown. With -P the
    repository root is not on sys.path, as for the installed `purifylab serve`."""
    port, cache = free_port(), tmp_path_factory.mktemp("gradio-cache")
    command = ["-P", "-m", "core", "serve", "--port", str(port), "--threads", "1"]
    with _server(command, port, tmp_path_factory.mktemp("serve") / "server.log", {"GRADIO_TEMP_DIR": str(cache)}) as connected:
        yield connected
    assert [path for path in cache.rglob("*") if path.is_file() and path.stat().st_size] == []


def _probabilities(label: dict) -> dict[str, float]:
    """gr.Label's API payload -> {class: probability}, after checking it names a known class."""
    assert label["label"] in CLASS_NAMES
    probabilities = {entry["label"]: entry["confidence"] for entry in label["confidences"]}
    assert set(probabilities) == set(CLASS_NAMES)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert max(probabilities, key=probabilities.get) == label["label"]
    return probabilities


def _pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.int16)


@pytest.mark.slow
def test_every_endpoint_is_named(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/classify", "/attack", "/purify", "/attack_and_purify"}
    assert {endpoint["returns"][-1]["label"] for endpoint in endpoints.values()} == {DETAILS}  # what ran comes last, after the README's outputs


@pytest.mark.slow
def test_classify_a_gallery_sample(client):
    image, reading, details = client.predict(None, "real normal #1", "vit", api_name="/classify")
    assert details.splitlines()[:2] == ["image: real normal #1 (true label NORMAL)", "classifier: vit"]
    assert np.array_equal(_pixels(image), _pixels(REPO_ROOT / "assets" / "gallery" / "real" / "normal_1.png"))
    _probabilities(reading)


@pytest.mark.slow
def test_attack_an_upload_stays_within_eps_and_flips_the_reading(client):
    image, clean, attacked, details = client.predict(handle_file(str(SAMPLE)), None, "vit", "pgd", 0.03, api_name="/attack")
    assert "image: an upload (no true label)" in details and SAMPLE.name not in details  # an upload's file name is never echoed
    adversarial, original = _pixels(image), _pixels(SAMPLE)
    assert adversarial.shape == original.shape == (128, 128)
    assert 0 < np.abs(adversarial - original).max() <= round(0.03 * 255) + 1  # PNG rounding
    assert _probabilities(clean) and _probabilities(attacked)
    assert attacked["label"] != clean["label"]  # PGD-10 at 0.03 flips the ViT on this X-ray


@pytest.mark.slow
def test_purify_changes_the_image(client):
    image, reading, details = client.predict(handle_file(str(SAMPLE)), None, "vit", "cold_direct", api_name="/purify")
    assert "purifier: cold_direct" in details
    purified = _pixels(image)
    assert purified.shape == (128, 128)
    assert np.abs(purified - _pixels(SAMPLE)).mean() > 1
    _probabilities(reading)


@pytest.mark.slow
def test_attack_and_purify_gives_three_readings_and_a_verdict(client):
    answer = client.predict(None, "real pneumonia #1", "vit", "fgsm", 0.03, "cold_direct", api_name="/attack_and_purify")
    *images, clean, attacked, purified, verdict, details = answer
    assert [_pixels(image).shape for image in images] == [(128, 128)] * 3
    for reading in (clean, attacked, purified):
        _probabilities(reading)
    assert "restored" in verdict or "did not change" in verdict
    assert f"threat model: grey-box, {threat_model('grey').describe()}" in details  # the API caller gets the threat model too
    assert "attack: fgsm, 1 step, L∞ ε 0.03 (7.65/255)" in details and "purifier: cold_direct" in details


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.png", b"hello, not an image\n", "This input cannot be used: content looks like text or HTML"),
        ("scan.dcm", b"\0" * 200 + b"DICM", "This input cannot be used:"),
        ("notes.txt", b"hello", "Invalid file type"),
    ],
)
def test_a_bad_file_is_refused_with_one_line(client, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(str(path)), None, "vit", api_name="/classify")
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_a_huge_file_and_an_unknown_name_are_refused(client, tmp_path):
    huge = tmp_path / "huge.png"
    with huge.open("wb") as sink:
        sink.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(huge)), None, "vit", api_name="/classify")
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(None, "real normal #1", "no_such_model", api_name="/classify")
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(None, "real normal #1", "vit", "pgd", 0.03, "no_such_purifier", api_name="/attack_and_purify")


@pytest.mark.slow
@pytest.mark.parametrize("eps", ["abc", None])
def test_an_eps_that_is_not_a_number_is_refused_with_one_line(client, eps):
    with pytest.raises(AppError) as refused:
        client.predict(None, "real normal #1", "vit", "fgsm", eps, api_name="/attack")
    assert str(refused.value) == f"This input cannot be used: eps must be a number; got {eps!r}"


@pytest.mark.slow
def test_the_readme_client_snippet_runs(client):
    readme = (REPO_ROOT / "README.md").read_text()
    snippet = re.search(r"### Serving it.*?```python\n(.*?)```", readme, re.DOTALL).group(1)
    snippet = snippet.replace('"http://127.0.0.1:7860/"', repr(client.src)).replace('"xray.png"', repr(str(SAMPLE)))
    names: dict = {}
    exec(compile(snippet, "README.md", "exec"), names)
    assert names["verdict"] and _probabilities(names["reading"])


@pytest.mark.slow
def test_the_space_entry_file_serves_where_the_space_says(client, tmp_path):
    # A Gradio Space runs `python gradio_app.py` and names the address in the environment.
    port = free_port()
    where = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_TEMP_DIR": str(tmp_path / "cache")}
    with _server(["gradio_app.py"], port, tmp_path / "space.log", where) as space:
        reading = space.predict(None, "real normal #1", "vit", api_name="/classify")[1]
    assert reading == client.predict(None, "real normal #1", "vit", api_name="/classify")[1]


def test_every_button_fills_or_empties_every_result_panel():
    # Without this, the panels of the previous run (another image's verdict) stayed beside the new result.
    page = gradio_app.build()
    kinds = {component["id"]: component["type"] for component in page.config["components"]}
    panels = {index for index, kind in kinds.items() if kind in ("image", "label", "textbox")}
    assert len(panels) == 8  # three images, three readings, the verdict and what ran
    for button in [index for index, kind in kinds.items() if kind == "button"]:
        listeners = [event for event in page.config["dependencies"] if [button, "click"] in [list(target) for target in event["targets"]]]
        assert {panel for event in listeners for panel in event["outputs"]} == panels
        for emptying in [event for event in listeners if event["api_visibility"] == "private"]:  # not a fifth endpoint
            assert page.fns[emptying["id"]].fn() == (None,) * len(emptying["outputs"])


def test_each_answer_says_what_ran_with_its_threat_model():
    *_, verdict, details = gradio_app.attack_and_purify(None, "real pneumonia #1", "vit", "fgsm", 0.03, "cold_blur")
    assert details.splitlines() == [
        "image: real pneumonia #1 (true label PNEUMONIA)",
        "classifier: vit",
        "attack: fgsm, 1 step, L∞ ε 0.03 (7.65/255), seed 0",
        f"threat model: grey-box, {threat_model('grey').describe()}",
        "purifier: cold_blur (Blurred, depth 20)",
        "device: cpu",  # `serve --device cuda` draws other purifier noise
    ]
    # /attack applies no purifier, and says so rather than "the purifier is applied at test time"
    assert gradio_app.attack(None, "real pneumonia #1", "vit", "fgsm", 0.03)[-1].splitlines() == [
        *details.splitlines()[:3],
        "threat model: grey-box, attacker sees the classifier only; no purifier in this answer",
        "device: cpu",
    ]


def test_the_none_purifier_is_credited_nothing():
    verdict = gradio_app.attack_and_purify(None, "real normal #1", "vit", "fgsm", 0.0, "none")[6]
    assert verdict == "the attack did not change the reading (matches the true label)"  # not "purification kept it"


def test_the_server_offers_the_labs_purifiers():
    from pages.common import DEFAULT_DEPTH, DEFAULT_RECON_STEPS, DEFAULT_T_STAR, purifier_variants

    offered = next(component for component in gradio_app.build().config["components"] if component["props"].get("label") == "Purifier")
    lab = {}
    for name, params in purifier_variants(DEFAULT_DEPTH, DEFAULT_T_STAR, DEFAULT_RECON_STEPS).values():
        lab.setdefault(name, dict(params))
    assert [choice[1] for choice in offered["props"]["choices"]] == list(lab)  # not diffdefense_paper: minutes an image on a CPU
    assert gradio_app.purify(None, "real normal #1", "vit", "one_shot")[-1].splitlines()[-2:] == [
        "purifier: one_shot (One-shot DDPM, t_star 0.04)",
        "device: cpu",
    ]
    with pytest.raises(gr.Error) as refused:
        gradio_app.purify(None, "real normal #1", "vit", "diffdefense_paper")
    assert refused.value.message.startswith("This input cannot be used: purifier 'diffdefense_paper' is not offered here; choose one of: none,")


@pytest.mark.parametrize(
    ("handler", "arguments", "message"),
    [
        ("attack", (None, "real normal #1", "vit", "pgd", "abc"), "eps must be a number; got 'abc'"),
        ("attack", (None, "real normal #1", "vit", "cw", 0.03), "attack 'cw' is not offered here; choose one of: fgsm, pgd, apgd"),
        ("classify", (None, "no such sample", "vit"), "sample 'no such sample' is not offered here; choose one of: real normal #1,"),
        ("classify", (None, "real normal #1", "mnist_cnn"), "classifier 'mnist_cnn' is not offered here; choose one of: vit,"),
        ("purify", (None, "real normal #1", "mnist_cnn", "none"), "classifier 'mnist_cnn' is not offered here"),
        ("attack_and_purify", (None, "real normal #1", "vit", "pgd", None, "none"), "eps must be a number; got None"),
    ],
)
def test_a_direct_caller_gets_one_line_before_anything_loads(handler, arguments, message):
    loaded = gradio_app._classifier.cache_info().currsize
    with pytest.raises(gr.Error) as refused:
        getattr(gradio_app, handler)(*arguments)
    assert refused.value.message.startswith(f"This input cannot be used: {message}") and "\n" not in refused.value.message
    assert gradio_app._classifier.cache_info().currsize == loaded  # refused before a classifier was built


def test_a_classifier_that_reads_through_a_purifier_says_so():
    details = gradio_app.classify(None, "real normal #1", "resnet_smooth")[-1]
    assert (
        "resnet_smooth was trained and calibrated to read X-rays through the 'gaussian' purifier (sigma 0.5); "
        "read without it, its readings are not those its card measured."
    ) in details.splitlines()
    assert "calibrated" not in gradio_app.classify(None, "real normal #1", "vit")[-1]


def test_what_the_loader_changed_in_an_upload_is_shown(tmp_path):
    translucent = Image.open(SAMPLE).convert("LA")
    translucent.putalpha(128)
    path = tmp_path / "translucent.png"
    translucent.save(path)
    notes = load_image(path).notes
    assert notes  # the loader flattened the alpha channel
    details = gradio_app.classify(str(path), None, "vit")[-1]
    assert [f"upload converted: {note}" for note in notes] == [line for line in details.splitlines() if line.startswith("upload converted")]
