"""Classification metrics for the imbalanced (1 : 2.9) X-ray task, with seeded bootstrap intervals.

Plain accuracy rewards always answering PNEUMONIA (74 %), so balanced accuracy, AUROC and per-class
sensitivity are reported beside it. AUROC is the Mann-Whitney rank statistic (ties get average ranks),
computed for all bootstrap resamples at once; with more than two classes (MNIST, CIFAR-10) it is the
macro average of the one-vs-rest AUROCs.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import rankdata

from core.errors import PurifyLabError

CLASS_NAMES = ("NORMAL", "PNEUMONIA")


@dataclass(frozen=True)
class ClassificationMetrics:
    n: int
    accuracy: float
    balanced_accuracy: float
    auroc: float | None  # None: undefined (a single class present)
    sensitivity: dict[str, float]
    confidence_95: dict[str, list[float | None]] = field(default_factory=dict)
    bootstrap_samples: int = 0

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


def accuracy(labels, predictions) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def balanced_accuracy(labels, predictions, num_classes: int = 2) -> float:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    present = [c for c in range(num_classes) if (labels == c).any()]
    return float(_per_class_recall(labels, predictions, num_classes)[present].mean())


def auroc(labels, scores) -> float:
    """Probability that a random PNEUMONIA image scores above a random NORMAL one (NaN with one class)."""
    return float(_auroc(np.asarray(labels), np.asarray(scores, dtype=np.float64)))


def classification_metrics(
    labels, probabilities, bootstrap: int = 1000, seed: int = 0, class_names: tuple[str, ...] | None = None
) -> ClassificationMetrics:
    """Metrics from labels (n,) and class probabilities (n, K); 95 % percentile bootstrap intervals.

    class_names defaults to (NORMAL, PNEUMONIA) for two columns and to "0".."K-1" otherwise."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if class_names is None:
        columns = probabilities.shape[-1] if probabilities.ndim == 2 else 2
        class_names = CLASS_NAMES if columns == 2 else tuple(str(c) for c in range(columns))
    if labels.ndim != 1 or probabilities.shape != (labels.size, len(class_names)) or labels.size == 0:
        raise PurifyLabError(
            f"need labels (n,) and probabilities (n, {len(class_names)}) with n >= 1; got {labels.shape} and {probabilities.shape}"
        )
    predictions = probabilities.argmax(1)
    recall = _per_class_recall(labels, predictions, len(class_names))
    intervals: dict[str, list[float]] = {}
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        index = rng.integers(0, labels.size, size=(bootstrap, labels.size))
        boot_labels, boot_predictions = labels[index], predictions[index]
        boot_recall = _per_class_recall(boot_labels, boot_predictions, len(class_names))
        present = np.stack([(boot_labels == c).any(-1) for c in range(len(class_names))], -1)
        resampled = {
            "accuracy": (boot_labels == boot_predictions).mean(-1),
            "balanced_accuracy": np.where(present, boot_recall, 0).sum(-1) / np.maximum(present.sum(-1), 1),
            "auroc": _class_auroc(boot_labels, probabilities[index]),
        }
        for cls, name in enumerate(class_names):
            resampled[f"sensitivity_{name}"] = np.where(present[:, cls], boot_recall[:, cls], np.nan)
        for key, values in resampled.items():
            low, high = np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any() else (np.nan, np.nan)
            intervals[key] = [_defined(low), _defined(high)]
    return ClassificationMetrics(
        n=int(labels.size),
        accuracy=accuracy(labels, predictions),
        balanced_accuracy=balanced_accuracy(labels, predictions, len(class_names)),
        auroc=_defined(_class_auroc(labels, probabilities)),
        sensitivity={name: float(recall[cls]) for cls, name in enumerate(class_names)},
        confidence_95=intervals,
        bootstrap_samples=int(bootstrap),
    )
