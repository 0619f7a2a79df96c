"""`purifylab serve`: a real server answers gradio_client on each endpoint and refuses bad input in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from benchmarks.serve_latency import connect, free_port
from core.io import MAX_UPLOAD_BYTES
from core.metrics import CLASS_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "assets" / "gallery" / "real" / "pneumonia_1.png"
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow  # two server starts and a dozen requests: about 100 s on 2 busy cores


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
    """`python -m core serve` on a free local port; no upload or output outlives its shutdown."""
    port, cache = free_port(), tmp_path_factory.mktemp("gradio-cache")
    command = ["-m", "core", "serve", "--port", str(port), "--threads", "1"]
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


def test_every_endpoint_is_named(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/classify", "/attack", "/purify", "/attack_and_purify"}


def test_classify_a_gallery_sample(client):
    image, reading = client.predict(None, "real normal #1", "vit", api_name="/classify")
    assert np.array_equal(_pixels(image), _pixels(REPO_ROOT / "assets" / "gallery" / "real" / "normal_1.png"))
    _probabilities(reading)


def test_attack_an_upload_stays_within_eps_and_flips_the_reading(client):
    image, clean, attacked = client.predict(handle_file(str(SAMPLE)), None, "vit", "pgd", 0.03, api_name="/attack")
    adversarial, original = _pixels(image), _pixels(SAMPLE)
    assert adversarial.shape == original.shape == (128, 128)
    assert 0 < np.abs(adversarial - original).max() <= round(0.03 * 255) + 1  # PNG rounding
    assert _probabilities(clean) and _probabilities(attacked)
    assert attacked["label"] != clean["label"]  # PGD-10 at 0.03 flips the ViT on this X-ray


def test_purify_changes_the_image(client):
    image, reading = client.predict(handle_file(str(SAMPLE)), None, "vit", "cold_direct", api_name="/purify")
    purified = _pixels(image)
    assert purified.shape == (128, 128)
    assert np.abs(purified - _pixels(SAMPLE)).mean() > 1
    _probabilities(reading)


def test_attack_and_purify_gives_three_readings_and_a_verdict(client):
    *images, clean, attacked, purified, verdict = client.predict(None, "real pneumonia #1", "vit", "fgsm", 0.03, "cold_direct", api_name="/attack_and_purify")
    assert [_pixels(image).shape for image in images] == [(128, 128)] * 3
    for reading in (clean, attacked, purified):
        _probabilities(reading)
    assert "restored" in verdict or "did not change" in verdict


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


def test_the_readme_client_snippet_runs(client):
    readme = (REPO_ROOT / "README.md").read_text()
    snippet = re.search(r"### Serving it.*?```python\n(.*?)```", readme, re.DOTALL).group(1)
    snippet = snippet.replace('"http://127.0.0.1:7860/"', repr(client.src)).replace('"xray.png"', repr(str(SAMPLE)))
    names: dict = {}
    exec(compile(snippet, "README.md", "exec"), names)
    assert names["verdict"] and _probabilities(names["reading"])


def test_the_space_entry_file_serves_where_the_space_says(client, tmp_path):
    # A Gradio Space runs `python gradio_app.py` and names the address in the environment.
    port = free_port()
    where = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_TEMP_DIR": str(tmp_path / "cache")}
    with _server(["gradio_app.py"], port, tmp_path / "space.log", where) as space:
        _, reading = space.predict(None, "real normal #1", "vit", api_name="/classify")
    assert reading == client.predict(None, "real normal #1", "vit", api_name="/classify")[1]
