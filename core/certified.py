"""The certified figures of a certify result, from its per-image answers: numpy only, so the app's
curves page and `certified_figure` draw a stored result without importing torch (core.certify computes
the answers and re-exports these)."""

from __future__ import annotations

import numpy as np

from core.metrics import balanced_accuracy_interval, clopper_pearson


def certified_accuracy(predictions: np.ndarray, radii: np.ndarray, labels: np.ndarray, radius: float) -> float:
    """Share of images certified correct at L2 radius >= `radius` (abstentions count as wrong)."""
    return float(np.mean((predictions == labels) & (radii >= radius)))


def certified_balanced_accuracy(predictions: np.ndarray, radii: np.ndarray, labels: np.ndarray, radius: float) -> float:
    """The mean over classes of each class's certified accuracy."""
    classes = np.unique(labels)
    return float(np.mean([certified_accuracy(predictions[labels == c], radii[labels == c], labels[labels == c], radius) for c in classes]))


def certified_confidence_95(predictions: np.ndarray, radii: np.ndarray, labels: np.ndarray, radius: float) -> dict[str, list[float]]:
    """95 % intervals of both certified figures at `radius`, as the tables build theirs: Clopper-Pearson
    for accuracy (k of n certified correct), the Bonferroni mean of per-class bounds for balanced accuracy."""
    certified = (predictions == labels) & (radii >= radius)
    return {
        "certified_accuracy": list(clopper_pearson(int(certified.sum()), int(labels.size))),
        "certified_balanced_accuracy": balanced_accuracy_interval(labels, certified),
    }


def certified_curve(result: dict, radii: np.ndarray | None = None) -> dict[str, list[float]]:
    """Certified accuracy and balanced accuracy against L2 radius, from a certify result's per-image answers."""
    rows = result["per_image"]
    labels = np.array([row["label"] for row in rows])
    predictions = np.array([row["prediction"] for row in rows])
    image_radii = np.array([-1.0 if row["radius"] is None else row["radius"] for row in rows])
    if radii is None:
        radii = np.linspace(0.0, max(1.0, float(image_radii.max(initial=0.0))), 101)
    return {
        "radius": [float(r) for r in radii],
        "certified_accuracy": [certified_accuracy(predictions, image_radii, labels, float(r)) for r in radii],
        "certified_balanced_accuracy": [certified_balanced_accuracy(predictions, image_radii, labels, float(r)) for r in radii],
    }
