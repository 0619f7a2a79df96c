"""Classification metrics for the imbalanced (1 : 2.9) X-ray task, with 95 % intervals.

Plain accuracy rewards always answering PNEUMONIA (74 %), so balanced accuracy, AUROC, per-class
sensitivity and the expected calibration error are reported beside it. Proportions (accuracy,
each class's sensitivity) get exact Clopper-Pearson intervals, which stay honest at small n where a
bootstrap of 8 correct answers collapses to [1, 1]; balanced accuracy gets the mean of per-class
Clopper-Pearson bounds at 97.5 % each (Bonferroni, so at least 95 % together); AUROC gets a seeded
percentile bootstrap. AUROC is the Mann-Whitney rank statistic (ties get average ranks),
computed for all bootstrap resamples at once; with more than two classes (MNIST, CIFAR-10) it is the
macro average of the one-vs-rest AUROCs.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import beta, rankdata

from core.errors import PurifyLabError

CLASS_NAMES = ("NORMAL", "PNEUMONIA")


@dataclass(frozen=True)
class ClassificationMetrics:
    n: int
    accuracy: float
    balanced_accuracy: float
    auroc: float | None  # None: undefined (a single class present)
    sensitivity: dict[str, float | None]  # None: the class is absent, its recall undefined
    confidence_95: dict[str, list[float | None]] = field(default_factory=dict)
    bootstrap_samples: int = 0
    specificity: float | None = None  # two classes: recall of class 0 (NORMAL), the negatives
    ece: float | None = None  # expected calibration error of the top-class confidence, 15 bins

    def to_dict(self) -> dict:
        return asdict(self)


def _per_class_recall(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of every class along the last axis; works on (n,) or a (B, n) stack of resamples."""
    recalls = []
    for cls in range(num_classes):
        is_class = labels == cls
        hits = (is_class & (predictions == cls)).sum(-1)
        recalls.append(hits / np.maximum(is_class.sum(-1), 1))
    return np.stack(recalls, -1)


def _auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC along the last axis; NaN where a resample holds only one class."""
    ranks = rankdata(scores, axis=-1)
    positives = (labels == 1).sum(-1)
    negatives = labels.shape[-1] - positives
    rank_sum = np.where(labels == 1, ranks, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _class_auroc(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Binary: AUROC of the class-1 probability. K classes: mean one-vs-rest AUROC over the classes present."""
    if probabilities.shape[-1] == 2:
        return _auroc(labels, probabilities[..., 1])
    per_class = np.stack([_auroc((labels == c).astype(np.int64), probabilities[..., c]) for c in range(probabilities.shape[-1])], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without some class: NaN, left out
        return np.nanmean(per_class, -1)


def _defined(value: float) -> float | None:
    """NaN (a statistic undefined on these labels) as None, so results stay valid JSON."""
    return float(value) if np.isfinite(value) else None


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for a proportion; (0, 1) when there are no trials."""
    if trials == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return low, high


def expected_calibration_error(labels, probabilities, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their share of images."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
    confidence, correct = probabilities.max(1), probabilities.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def accuracy(labels, predictions) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def balanced_accuracy(labels, predictions, num_classes: int = 2) -> float:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    present = [c for c in range(num_classes) if (labels == c).any()]
    return float(_per_class_recall(labels, predictions, num_classes)[present].mean())


def auroc(labels, scores) -> float:
    """Probability that a random PNEUMONIA image scores above a random NORMAL one (NaN with one class)."""
    return float(_auroc(np.asarray(labels), np.asarray(scores, dtype=np.float64)))


def classification_metrics(labels, probabilities, bootstrap: int = 1000, seed: int = 0, class_names: tuple[str, ...] | None = None) -> ClassificationMetrics:
    """Metrics from labels (n,) and class probabilities (n, K), with the 95 % intervals of the module doc.

    class_names defaults to (NORMAL, PNEUMONIA) for two columns and to "0".."K-1" otherwise."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if class_names is None:
        columns = probabilities.shape[-1] if probabilities.ndim == 2 else 2
        class_names = CLASS_NAMES if columns == 2 else tuple(str(c) for c in range(columns))
    if labels.ndim != 1 or probabilities.shape != (labels.size, len(class_names)) or labels.size == 0:
        raise PurifyLabError(f"need labels (n,) and probabilities (n, {len(class_names)}) with n >= 1; got {labels.shape} and {probabilities.shape}")
    predictions = probabilities.argmax(1)
    recall = _per_class_recall(labels, predictions, len(class_names))
    present = [c for c in range(len(class_names)) if (labels == c).any()]
    intervals: dict[str, list[float | None]] = {"accuracy": list(clopper_pearson(int((labels == predictions).sum()), labels.size))}
    per_class_confidence = 1 - 0.05 / max(len(present), 1)
    bounds = []
    for cls, name in enumerate(class_names):
        members = labels == cls
        hits = int((members & (predictions == cls)).sum())
        intervals[f"sensitivity_{name}"] = list(clopper_pearson(hits, int(members.sum()))) if members.any() else [None, None]
        if members.any():
            bounds.append(clopper_pearson(hits, int(members.sum()), per_class_confidence))
    intervals["balanced_accuracy"] = [float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds]))]
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        index = rng.integers(0, labels.size, size=(bootstrap, labels.size))
        values = _class_auroc(labels[index], probabilities[index])
        low, high = np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any() else (np.nan, np.nan)
        intervals["auroc"] = [_defined(low), _defined(high)]
    return ClassificationMetrics(
        n=int(labels.size),
        accuracy=accuracy(labels, predictions),
        balanced_accuracy=balanced_accuracy(labels, predictions, len(class_names)),
        auroc=_defined(_class_auroc(labels, probabilities)),
        sensitivity={name: float(recall[cls]) if (labels == cls).any() else None for cls, name in enumerate(class_names)},
        confidence_95=intervals,
        bootstrap_samples=int(bootstrap),
        specificity=float(recall[0]) if len(class_names) == 2 and (labels == 0).any() else None,
        ece=expected_calibration_error(labels, probabilities),
    )
