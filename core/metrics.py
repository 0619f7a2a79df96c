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
# float32 softmax rows sum to 1 within 3e-7 (measured, 2 to 100 classes); logits or scores miss by far more.
# float16 rounding alone moves a row sum by up to 3.9e-4 (measured), so a float16 array gets its own eps, 9.8e-4.
ROW_SUM_TOLERANCE = 1e-4


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


def balanced_accuracy_interval(labels: np.ndarray, correct: np.ndarray) -> list[float]:
    """The 95 % interval of balanced accuracy from each image's label and whether it was answered right:
    the mean of per-class Clopper-Pearson bounds at 1 - 0.05 / (classes present) each (Bonferroni), so
    that all of them, hence their mean, hold together at >= 95 %."""
    present = np.unique(labels)
    confidence = 1 - 0.05 / max(len(present), 1)
    bounds = [clopper_pearson(int(correct[labels == cls].sum()), int((labels == cls).sum()), confidence) for cls in present]
    return [float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds]))]


def _numeric_arrays(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Both as numpy arrays of numbers, or a one-line error instead of numpy's for ragged rows or text."""
    try:
        labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    except ValueError as error:  # ragged rows
        raise PurifyLabError(f"labels and probabilities must be rectangular arrays: {error}") from None
    if labels.dtype.kind not in "biuf" or probabilities.dtype.kind not in "biuf":
        raise PurifyLabError(f"labels and probabilities must be numbers; got {labels.dtype} and {probabilities.dtype} arrays")
    return labels, probabilities


def _checked_inputs(labels, probabilities, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) as int64 and probabilities (n, K) as float64, or a one-line error: logits, NaN rows or a
    label outside [0, K) would otherwise give an impossible or silently skewed figure, not a failure."""
    labels, probabilities = _numeric_arrays(labels, probabilities)
    if num_classes is None:
        num_classes = probabilities.shape[1] if probabilities.ndim == 2 else 0
    if labels.ndim != 1 or probabilities.shape != (labels.size, num_classes) or labels.size == 0 or num_classes == 0:
        shown = num_classes or "K"
        raise PurifyLabError(f"need labels (n,) and probabilities (n, {shown}) with n >= 1; got {labels.shape} and {probabilities.shape}")
    tolerance = max(ROW_SUM_TOLERANCE, float(np.finfo(probabilities.dtype).eps)) if probabilities.dtype.kind == "f" else ROW_SUM_TOLERANCE
    probabilities = probabilities.astype(np.float64)
    row_sums = probabilities.sum(1)
    problems = (
        (~np.isfinite(probabilities).all(1), "probabilities must be finite numbers"),
        (((probabilities < 0) | (probabilities > 1)).any(1), "probabilities must lie in [0, 1] (logits? apply softmax first)"),
        (np.abs(row_sums - 1) > tolerance, f"each row of probabilities must sum to 1 within {tolerance:.1e} (scores? apply softmax first)"),
    )
    for bad_rows, rule in problems:
        if bad_rows.any():
            row = int(np.flatnonzero(bad_rows)[0])
            values, count = probabilities[row], int(bad_rows.sum())
            shown = f"probabilities[{row}] spans [{values.min():.4g}, {values.max():.4g}] and sums to {row_sums[row]:.6g}"
            raise PurifyLabError(f"{rule}; {shown} ({count} of {labels.size} rows)")
    valid = (labels == np.floor(labels)) & (labels >= 0) & (labels < num_classes)
    if not valid.all():
        row = int(np.flatnonzero(~valid)[0])
        raise PurifyLabError(
            f"labels must be whole class indices in [0, {num_classes}); labels[{row}] is {labels[row]} ({int((~valid).sum())} of {labels.size} labels)"
        )
    return labels.astype(np.int64), probabilities


def expected_calibration_error(labels, probabilities, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their share of images."""
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise PurifyLabError(f"bins must be a whole number >= 1, got {bins!r}")
    labels, probabilities = _checked_inputs(labels, probabilities)
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
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise PurifyLabError(f"bootstrap must be a whole number >= 0 (0: no AUROC interval), got {bootstrap!r}")
    labels, probabilities = _numeric_arrays(labels, probabilities)
    if class_names is None:
        columns = probabilities.shape[-1] if probabilities.ndim == 2 else 2
        class_names = CLASS_NAMES if columns == 2 else tuple(str(c) for c in range(columns))
    labels, probabilities = _checked_inputs(labels, probabilities, len(class_names))
    predictions = probabilities.argmax(1)
    recall = _per_class_recall(labels, predictions, len(class_names))
    intervals: dict[str, list[float | None]] = {"accuracy": list(clopper_pearson(int((labels == predictions).sum()), labels.size))}
    for cls, name in enumerate(class_names):
        members = labels == cls
        hits = int((members & (predictions == cls)).sum())
        intervals[f"sensitivity_{name}"] = list(clopper_pearson(hits, int(members.sum()))) if members.any() else [None, None]
    intervals["balanced_accuracy"] = balanced_accuracy_interval(labels, labels == predictions)
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
