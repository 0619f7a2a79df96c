"""Post-hoc calibration fitted on validation: a temperature and a decision threshold.

A network trained with class-weighted cross-entropy is over-confident ("100 %") and its argmax
rule need not be the one that balances sensitivity and specificity. Both are chosen on the
patient-disjoint validation split, never on test, and stored in the model card.

The shown probability is the one after the threshold (the model moves its class-1 logit so that
argmax is the decision), so the temperature is fitted twice: once to choose the threshold, once more
with that decision held fixed, so that "80 %" after the move still means right about 4 times in 5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.data.warning import warn
from core.errors import PurifyLabError
from core.metrics import balanced_accuracy

TEMPERATURE_GRID = (1e-3, 1e3)  # an adversarially trained model needed 0.014


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, warn_at_edge: bool = True) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T).

    A one-dimensional problem: a log-spaced grid, then a finer grid around its best point, kept inside
    the grid. Non-finite logits are refused: every NLL is NaN there, and the argmin of NaNs named the
    grid's first point, a maximally over-confident model, without a word. An NLL with no minimum inside
    the grid (validation perfectly separated, every margin alike, or read no better than chance) only
    warns (`warn_at_edge`): the trainers fit this when they publish a finished run, where a refusal
    would leave the run without its model file and `--resume` would refuse it again; their card then
    says the temperature is a bound (`at_grid_edge`)."""
    logits, labels = logits.double(), labels.long()
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise PurifyLabError(f"need logits (n, K) and labels (n,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    non_finite = int((~torch.isfinite(logits)).sum())
    if non_finite:
        raise PurifyLabError(f"{non_finite} of the logits are NaN or infinite (a diverged model?); no temperature can be fitted to them")

    def nll(temperatures: np.ndarray) -> np.ndarray:
        return np.array([float(F.cross_entropy(logits / t, labels)) for t in temperatures])

    low, high = TEMPERATURE_GRID
    grid = np.exp(np.linspace(np.log(low), np.log(high), 121))
    best = grid[int(np.argmin(nll(grid)))]
    if warn_at_edge and at_grid_edge(best):
        warn(
            f"the validation NLL has no minimum inside the temperature grid [{low:g}, {high:g}]: it is lowest at its edge "
            f"T={best:g}, a bound rather than a fitted temperature (validation perfectly separated, every margin alike, "
            "or read no better than chance)"
        )
    fine = np.clip(best * np.exp(np.linspace(-0.1, 0.1, 41)), low, high)
    return float(fine[int(np.argmin(nll(fine)))])


def at_grid_edge(temperature: float) -> bool:
    """Whether a fitted temperature sits on an edge of `TEMPERATURE_GRID`: a bound, not a minimum."""
    low, high = TEMPERATURE_GRID
    return not low * (1 + 1e-9) < temperature < high * (1 - 1e-9)  # the grid's ends are exp(log(edge)): a rounding off


def balanced_threshold(positive_probability: np.ndarray, labels: np.ndarray, default: float = 0.5) -> float:
    """The decision threshold on P(class 1), chosen on validation by the one-standard-error rule.

    Keep `default` (a class-balanced model's natural cut) unless the best threshold's balanced
    accuracy beats it by more than one standard error; otherwise take, among thresholds within one
    standard error of the best, the one closest to `default` in log-odds. Why: validation comes from
    the training cohort, and the exact maximum there sat at 0.10-0.20, a cut that cost 14-38 points of
    specificity on a new cohort (docs/TRAINING.md); a cut is moved only as far as validation can justify.
    """
    scores = np.asarray(positive_probability, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if set(np.unique(labels)) != {0, 1}:
        raise PurifyLabError("choosing a threshold needs validation images of both classes")
    log_odds = np.log(np.clip(scores, 1e-12, 1 - 1e-12) / np.clip(1 - scores, 1e-12, 1))
    cuts = np.unique(log_odds)
    candidates = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    negatives, positives = labels == 0, labels == 1
    specificity = np.array([(log_odds[negatives] <= c).mean() for c in candidates])
    sensitivity = np.array([(log_odds[positives] > c).mean() for c in candidates])
    values = (specificity + sensitivity) / 2
    best = int(np.argmax(values))
    standard_error = 0.5 * np.sqrt(
        specificity[best] * (1 - specificity[best]) / negatives.sum() + sensitivity[best] * (1 - sensitivity[best]) / positives.sum()
    )
    floor = values[best] - standard_error
    target = np.log(default / (1 - default))
    if balanced_accuracy(labels, (log_odds > target).astype(np.int64)) >= floor:
        return float(default)
    near_best = candidates[values >= floor]
    chosen = near_best[np.argmin(np.abs(near_best - target))]
    return float(1 / (1 + np.exp(-chosen)))


THRESHOLD_LOG_ODDS = (-700.0, 30.0)  # a float holds t down to 1e-304, but 1 - t only down to 1e-13 exactly


def fit_binary_calibration(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(temperature, threshold) for `XrayClassifier.calibrate` from validation logits of two classes.

    The threshold is chosen on the temperature-scaled probabilities; the decision boundary it sets on
    the raw margin (class-1 minus class-0 logit) is then kept while the temperature is refitted to
    the margin measured from that boundary, and the threshold re-expressed at the new temperature:
    the same decisions, calibrated probabilities on both sides of the boundary."""
    logits = logits.double()
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise PurifyLabError(f"need logits (n, 2) of a two-class model, got {tuple(logits.shape)}")
    first = fit_temperature(logits, labels, warn_at_edge=False)  # it only places the boundary: the second fit is the one kept
    threshold = balanced_threshold(torch.softmax(logits / first, dim=1)[:, 1].numpy(), labels.numpy())
    boundary = first * float(np.log(threshold / (1 - threshold)))
    margin = logits[:, 1] - logits[:, 0] - boundary
    temperature = fit_temperature(torch.stack([torch.zeros_like(margin), margin], dim=1), labels)
    # A model whose margins barely vary wants a tiny temperature, and the threshold then lands at
    # 1 - 1e-20 (a float rounds it to 1) or 1e-400 (to 0): keep it where a float holds its log-odds.
    low, high = THRESHOLD_LOG_ODDS
    temperature = max(temperature, boundary / high, boundary / low)
    return temperature, float(1 / (1 + np.exp(-boundary / temperature)))
