"""Temperature and threshold chosen on validation, and the exact intervals reported beside them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.calibration import balanced_threshold, fit_binary_calibration, fit_temperature
from core.errors import PurifyLabError
from core.metrics import balanced_accuracy, classification_metrics, clopper_pearson, expected_calibration_error


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(4000, 2, generator=generator)
    # labels drawn from softmax(logits / 3): the NLL-optimal temperature is 3
    labels = torch.bernoulli(torch.softmax(logits / 3.0, dim=1)[:, 1], generator=generator).long()
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)
    with pytest.raises(PurifyLabError, match="need logits"):
        fit_temperature(logits, labels[:10])


def test_balanced_threshold_keeps_the_default_unless_validation_justifies_a_move():
    # a perfect separation at 0.5: nothing to move
    probabilities = np.array([0.2, 0.3, 0.7, 0.9])
    labels = np.array([0, 0, 1, 1])
    assert balanced_threshold(probabilities, labels) == 0.5
    # overlapping classes: the default is kept when it scores within one standard error of the exact
    # maximum, else the near-best cut closest to it is taken, never simply the exact maximum
    labels = np.repeat([0, 1], 100)
    kept = moved = 0
    for seed, high_normal in enumerate((0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)):
        rng = np.random.default_rng(seed)
        probabilities = np.where(labels == 1, rng.uniform(0.3, 1.0, 200), rng.uniform(0.0, high_normal, 200))
        cuts = np.unique(probabilities)
        scores = np.array([balanced_accuracy(labels, probabilities > c) for c in cuts])
        best = int(np.argmax(scores))
        specificity, sensitivity = (probabilities[:100] <= cuts[best]).mean(), (probabilities[100:] > cuts[best]).mean()
        floor = scores[best] - 0.5 * np.sqrt(specificity * (1 - specificity) / 100 + sensitivity * (1 - sensitivity) / 100)
        threshold = balanced_threshold(probabilities, labels)
        assert balanced_accuracy(labels, probabilities > threshold) >= floor - 1e-9
        assert abs(threshold - 0.5) <= abs(cuts[best] - 0.5) + 1e-9
        if balanced_accuracy(labels, probabilities > 0.5) >= floor:
            assert threshold == 0.5
            kept += 1
        else:
            moved += 1
    assert kept and moved  # both branches were exercised
    # far from the default (every score above 0.5): the nearest near-best cut, not the exact maximum
    probabilities = np.array([0.55, 0.6, 0.65, 0.9, 0.95, 0.97, 0.98, 0.99])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    threshold = balanced_threshold(probabilities, labels)
    assert 0.65 < threshold < 0.9
    with pytest.raises(PurifyLabError, match="both classes"):
        balanced_threshold(probabilities, np.ones(8, dtype=np.int64))


def test_binary_calibration_keeps_the_decision_and_calibrates_what_is_shown():
    # true class-1 probability sigmoid(margin - 2): the natural cut sits at margin 2, not 0, so the
    # threshold moves and a temperature fitted only before the move leaves the shown numbers off
    generator = torch.Generator().manual_seed(0)
    margin = 4.0 * torch.randn(6000, generator=generator) + 2.0
    labels = torch.bernoulli(torch.sigmoid(margin - 2.0), generator=generator).long()
    logits = torch.stack([torch.zeros_like(margin), margin], 1)
    temperature, threshold = fit_binary_calibration(logits, labels)
    first = fit_temperature(logits, labels)
    first_threshold = balanced_threshold(torch.softmax(logits / first, 1)[:, 1].numpy(), labels.numpy())

    def shown(t: float, cut: float) -> np.ndarray:  # what XrayClassifier.calibrate(t, cut) outputs
        return torch.softmax(logits / t - torch.tensor([0.0, float(np.log(cut / (1 - cut)))]), 1).numpy()

    before, after = shown(first, first_threshold), shown(temperature, threshold)
    assert np.array_equal(before.argmax(1), after.argmax(1))  # the same decisions
    assert expected_calibration_error(labels.numpy(), after) < 0.02 < expected_calibration_error(labels.numpy(), before)
    assert temperature == pytest.approx(1.0, rel=0.1)  # the margin was already on the right scale
    with pytest.raises(PurifyLabError, match="two-class"):
        fit_binary_calibration(torch.zeros(4, 3), torch.zeros(4).long())


def test_clopper_pearson_matches_hand_computed_values():
    # 8 of 8 correct: the lower bound solves p^8 = 0.025, i.e. 0.025 ** (1/8)
    low, high = clopper_pearson(8, 8)
    assert low == pytest.approx(0.025 ** (1 / 8)) and high == 1.0
    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10))
    assert clopper_pearson(0, 0) == (0.0, 1.0)


def test_small_samples_get_honest_intervals_not_one_to_one():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probabilities = np.stack([1 - labels, labels], 1).astype(float) * 0.9 + 0.05
    metrics = classification_metrics(labels, probabilities, bootstrap=200)
    assert metrics.accuracy == metrics.balanced_accuracy == 1.0
    assert metrics.confidence_95["accuracy"][0] < 0.7
    assert metrics.confidence_95["balanced_accuracy"][0] < 0.5
    assert metrics.specificity == 1.0
    assert metrics.ece == pytest.approx(0.05)


def test_expected_calibration_error_of_a_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=confidence.size) < confidence
    labels = np.where(correct, 1, 0)
    probabilities = np.stack([1 - confidence, confidence], 1)
    assert expected_calibration_error(labels, probabilities) < 0.02
    overconfident = np.stack([np.zeros_like(confidence), np.ones_like(confidence)], 1)
    assert expected_calibration_error(labels, overconfident) == pytest.approx(1 - labels.mean(), abs=1e-9)


def test_non_finite_logits_are_refused_and_an_unbounded_temperature_is_warned_about():
    """A NaN logit made every NLL NaN, and the argmin of NaNs returned T = 0.0009 (below the grid)
    without a word; separated classes, whose NLL keeps falling towards T = 0, gave the same silently."""
    from core.data.warning import DataWarning

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 2, generator=generator)
    labels = torch.arange(40) % 2
    for bad in (float("nan"), float("inf")):
        broken = logits.clone()
        broken[3, 1] = bad
        for fit in (fit_temperature, fit_binary_calibration):
            with pytest.raises(PurifyLabError, match="^1 of the logits are NaN or infinite"):
                fit(broken, labels)
    separated = torch.stack([torch.zeros(40), torch.where(labels == 1, 3.0, -3.0) + 0.1 * torch.randn(40, generator=generator)], 1)
    with pytest.warns(DataWarning, match=r"no minimum inside the temperature grid .* edge T=0\.001,"):
        assert fit_temperature(separated, labels) == pytest.approx(1e-3, rel=1e-9)  # the grid's edge, not a step beyond it
    with pytest.warns(DataWarning, match=r"edge T=1000,"):
        fit_temperature(separated, 1 - labels)  # read the wrong way round: the NLL falls towards T = infinity


def test_a_temperature_at_the_grids_edge_is_warned_about_once_and_named_on_the_card():
    """fit_binary_calibration fits twice and warned twice; the card recorded T = 0.001 fitted on val,
    with nothing beside it saying that it is a bound rather than a fit."""
    import warnings
    from types import SimpleNamespace

    from core.calibration import at_grid_edge
    from core.models import create_classifier
    from core.train.classifier import _fit_calibration

    model = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8))
    last = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)  # every margin alike: the NLL is flat in T
    val = SimpleNamespace(images=torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8), labels=torch.arange(8) % 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibration = _fit_calibration(model, val)
    assert [str(w.message) for w in caught if "temperature grid" in str(w.message)] == [caught[0].message.args[0]]
    assert at_grid_edge(calibration["temperature"]) and "a bound, not a fitted temperature" in calibration["temperature_note"]
