"""Post-hoc calibration fitted on validation: a temperature and a decision threshold.

A network trained with class-weighted cross-entropy is over-confident ("100 %") and its argmax
rule need not be the one that balances sensitivity and specificity. Both are chosen on the
patient-disjoint validation split, never on test, and stored in the model card.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import PurifyLabError
from core.metrics import balanced_accuracy


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T).

    A one-dimensional problem: a log-spaced grid, then a finer grid around its best point."""
    logits, labels = logits.double(), labels.long()
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise PurifyLabError(f"need logits (n, K) and labels (n,), got {tuple(logits.shape)} and {tuple(labels.shape)}")

    def nll(temperatures: np.ndarray) -> np.ndarray:
        return np.array([float(F.cross_entropy(logits / t, labels)) for t in temperatures])

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    best = grid[int(np.argmin(nll(grid)))]
    fine = best * np.exp(np.linspace(-0.1, 0.1, 41))
    return float(fine[int(np.argmin(nll(fine)))])


def balanced_threshold(positive_probability: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on P(class 1) that maximises balanced accuracy; among equally good thresholds,
    the middle of the widest run (in log-odds), which leaves the most margin on both sides."""
    scores = np.asarray(positive_probability, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if set(np.unique(labels)) != {0, 1}:
        raise PurifyLabError("choosing a threshold needs validation images of both classes")
    log_odds = np.log(np.clip(scores, 1e-12, 1 - 1e-12) / np.clip(1 - scores, 1e-12, 1))
    cuts = np.unique(log_odds)
    candidates = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    values = np.array([balanced_accuracy(labels, (log_odds > c).astype(np.int64)) for c in candidates])
    best = np.flatnonzero(np.isclose(values, values.max()))
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    widest = max(runs, key=lambda run: (candidates[run[-1]] - candidates[run[0]], -run[0]))
    middle = (candidates[widest[0]] + candidates[widest[-1]]) / 2
    return float(1 / (1 + np.exp(-middle)))
