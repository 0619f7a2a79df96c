"""Bad input to the metrics is refused in one line, since each case used to return a wrong figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import PurifyLabError
from core.metrics import classification_metrics, expected_calibration_error

HALVES = [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]


def _tiny_model_outputs(classes: int) -> tuple[np.ndarray, torch.Tensor]:
    """Seeded labels and the logits of a tiny real linear classifier on random features."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, classes)
    logits = model(4.0 * torch.randn(200, 8)).detach()
    return np.arange(200) % classes, logits


@pytest.mark.parametrize("metric", [classification_metrics, expected_calibration_error])
@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        ([0, 1, 0, 1], [[2, -1], [-3, -2], [0.5, 3], [-1, 4]], r"must lie in \[0, 1\] \(logits\? apply softmax first\); probabilities\[0\]"),
        ([0, 1], [[-0.5, -2], [-1, -0.2]], r"must lie in \[0, 1\].*2 of 2 rows"),
        ([0, 1], [[0.2, 0.2], [0.5, 0.5]], r"must sum to 1 within 1.0e-04.*probabilities\[0\].*sums to 0.4"),
        ([0, 1, 1], [[0.5, 0.5], [np.nan, np.nan], [0.5, 0.5]], r"must be finite numbers; probabilities\[1\]"),
        ([0, 1, 2], HALVES, r"whole class indices in \[0, 2\); labels\[2\] is 2 \(1 of 3 labels\)"),
        ([0, -1, 1], HALVES, r"whole class indices in \[0, 2\); labels\[1\] is -1"),
        ([0, 0.5, 1], HALVES, r"whole class indices in \[0, 2\); labels\[1\] is 0.5"),
        (["NORMAL"] * 3, HALVES, "must be numbers; got <U6"),
        ([0, 1], HALVES, r"need labels \(n,\) and probabilities \(n, 2\) with n >= 1; got \(2,\) and \(3, 2\)"),
        ([0, 1], [0.5, 0.5], r"need labels \(n,\) and probabilities"),
        ([0, 1], [[0.5, 0.5], [1.0]], "must be rectangular arrays"),
        ([], np.zeros((0, 2)), "with n >= 1"),
    ],
)
def test_bad_labels_or_probabilities_are_refused_in_one_line(metric, labels, probabilities, message):
    with pytest.raises(PurifyLabError, match=message) as refusal:
        metric(labels, probabilities)
    assert "\n" not in str(refusal.value)


def test_logits_are_refused_and_their_softmax_accepted_at_every_precision():
    """A real classifier's logits are refused; its float32 softmax, and that softmax rounded to float16
    (row sums off by up to 3.9e-4), give the figures of the exact float64 softmax."""
    for classes in (2, 10):
        labels, logits = _tiny_model_outputs(classes)
        with pytest.raises(PurifyLabError, match="apply softmax first"):
            classification_metrics(labels, logits.numpy(), bootstrap=0)
        exact = classification_metrics(labels, torch.softmax(logits.double(), 1).numpy(), bootstrap=0)
        assert classification_metrics(labels, torch.softmax(logits, 1).numpy(), bootstrap=0).balanced_accuracy == exact.balanced_accuracy
        half = torch.softmax(logits, 1).half().numpy()
        assert expected_calibration_error(labels, half) == pytest.approx(exact.ece, abs=1e-3)
    # a float32 array gets no float16 slack: a row off by 1e-3 is a score, not rounding
    with pytest.raises(PurifyLabError, match="must sum to 1"):
        expected_calibration_error([0], np.array([[0.5, 0.501]], dtype=np.float32))


def test_float_labels_that_are_whole_numbers_are_class_indices():
    whole = classification_metrics(np.array([0.0, 1.0, 1.0]), [[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]], bootstrap=0)
    assert whole.to_dict() == classification_metrics([0, 1, 1], [[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]], bootstrap=0).to_dict()


def test_bins_and_bootstrap_counts_are_refused_when_impossible():
    with pytest.raises(PurifyLabError, match="bins must be a whole number >= 1, got 0"):
        expected_calibration_error([0, 1], [[0.9, 0.1], [0.2, 0.8]], bins=0)
    with pytest.raises(PurifyLabError, match="bins must be a whole number >= 1, got 2.5"):
        expected_calibration_error([0, 1], [[0.9, 0.1], [0.2, 0.8]], bins=2.5)
    with pytest.raises(PurifyLabError, match=r"bootstrap must be a whole number >= 0 \(0: no AUROC interval\), got -1"):
        classification_metrics([0, 1], [[0.9, 0.1], [0.2, 0.8]], bootstrap=-1)
