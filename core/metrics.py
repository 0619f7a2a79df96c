"""Classification metrics for the imbalanced (1 : 2.9) X-ray task, with seeded bootstrap intervals.

Plain accuracy rewards always answering PNEUMONIA (74 %), so balanced accuracy, AUROC and per-class
sensitivity are reported beside it. AUROC is the Mann-Whitney rank statistic (ties get average ranks),
computed for all bootstrap resamples at once.
"""

from __future__ import annotations

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
    auroc: float
    sensitivity: dict[str, float]
    confidence_95: dict[str, list[float]] = field(default_factory=dict)
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
    labels, probabilities, bootstrap: int = 1000, seed: int = 0, class_names: tuple[str, ...] = CLASS_NAMES
) -> ClassificationMetrics:
    """Metrics from labels (n,) and class probabilities (n, 2); 95 % percentile bootstrap intervals."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 1 or probabilities.shape != (labels.size, len(class_names)) or labels.size == 0:
        raise PurifyLabError(
            f"need labels (n,) and probabilities (n, {len(class_names)}) with n >= 1; got {labels.shape} and {probabilities.shape}"
        )
    predictions = probabilities.argmax(1)
    scores = probabilities[:, 1]
    recall = _per_class_recall(labels, predictions, len(class_names))
    intervals: dict[str, list[float]] = {}
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        index = rng.integers(0, labels.size, size=(bootstrap, labels.size))
        boot_labels, boot_predictions, boot_scores = labels[index], predictions[index], scores[index]
        boot_recall = _per_class_recall(boot_labels, boot_predictions, len(class_names))
        present = np.stack([(boot_labels == c).any(-1) for c in range(len(class_names))], -1)
        resampled = {
            "accuracy": (boot_labels == boot_predictions).mean(-1),
            "balanced_accuracy": np.where(present, boot_recall, 0).sum(-1) / np.maximum(present.sum(-1), 1),
            "auroc": _auroc(boot_labels, boot_scores),
        }
        for cls, name in enumerate(class_names):
            resampled[f"sensitivity_{name}"] = np.where(present[:, cls], boot_recall[:, cls], np.nan)
        for key, values in resampled.items():
            low, high = np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any() else (np.nan, np.nan)
            intervals[key] = [float(low), float(high)]
    return ClassificationMetrics(
        n=int(labels.size),
        accuracy=accuracy(labels, predictions),
        balanced_accuracy=balanced_accuracy(labels, predictions, len(class_names)),
        auroc=auroc(labels, scores),
        sensitivity={name: float(recall[cls]) for cls, name in enumerate(class_names)},
        confidence_95=intervals,
        bootstrap_samples=int(bootstrap),
    )
