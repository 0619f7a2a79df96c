"""Bad parameters through the Python API: refused before any work, naming the value and what is allowed."""

from __future__ import annotations

import math
import time

import pytest
import torch

from core.attacks import AttackConfig, craft
from core.errors import PurifyLabError
from core.lab import read
from core.models import create_classifier
from core.purifiers import create_purifier


def _refused(call, *expected: str) -> None:
    start = time.perf_counter()
    with pytest.raises(PurifyLabError) as caught:
        call()
    assert time.perf_counter() - start < 2, "validation must come before any work"
    message = str(caught.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"eps": -0.1}, ("eps=-0.1", "[0.0, 1.0]")),
        ({"eps": 1.5}, ("eps=1.5 is outside the allowed range [0.0, 1.0]",)),
        ({"eps": math.nan}, ("eps=nan",)),
        ({"steps": 0}, ("steps=0 is outside the allowed range [1,",)),
        ({"name": "nope"}, ("'nope'", "pgd")),
        ({"norm": "l3"}, ("'l3'", "linf")),
    ],
)
def test_attack_settings(params, expected):
    _refused(lambda: AttackConfig(**{"name": "pgd", **params}).validate(), *expected)


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("ddpm", {"t_star": 0.0}, ("t_star=0.0 is outside the allowed range (0.0, 1.0]",)),
        ("ddpm", {"t_star": 1.5}, ("t_star=1.5", "(0.0, 1.0]")),
        ("ddpm", {"t_star": math.inf}, ("t_star=inf",)),
        ("ddim", {"skip": 0}, ("skip=0",)),
        ("noise", {"t_star": -1.0}, ("t_star=-1.0",)),
        ("diffdefense", {"L": 0}, ("L=0 must be >= 1",)),
        ("blur", {"sigma": -3.0}, ("sigma=-3.0",)),
        ("ddpm", {"bogus": 1}, ("'bogus'", "t_star")),
        ("nope", {}, ("'nope'", "ddpm")),
    ],
)
def test_purifier_settings(name, params, expected):
    _refused(lambda: create_purifier(name, **params), *expected)


@pytest.mark.parametrize(
    "image, expected",
    [
        (torch.full((1, 1, 128, 128), math.nan), ("NaN or Inf",)),
        (torch.full((1, 1, 128, 128), math.inf), ("NaN or Inf",)),
        (torch.rand(1, 3, 128, 128), ("(N, 1,",)),
        (torch.rand(1, 1, 128, 128) * 255, ("expected [0, 1]",)),
        (torch.rand(128, 128), ("4-D",)),
        (torch.zeros(1, 1, 128, 128, dtype=torch.uint8), ("uint8",)),
    ],
)
def test_bad_pixels_are_refused_by_purifiers_classifiers_and_attacks(image, expected):
    """The shipped 1-channel DDPM and a tiny 1-channel classifier, through the API's entry points."""
    _refused(lambda: create_purifier("ddpm").purify(image), *expected)
    classifier = create_classifier("student_cnn", pretrained=False, image_size=128, widths=(4, 8, 8, 8)).eval()
    _refused(lambda: read(classifier, image), *expected)
    labels = torch.zeros(image.shape[0] if image.ndim == 4 else 1, dtype=torch.long)
    _refused(lambda: craft("grey", classifier, None, image, labels, AttackConfig(name="pgd", steps=3)), *expected)
