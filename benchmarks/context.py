"""What every section of a run shares: settings, device, both model bundles, the X-rays, and the checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.models import Models
from benchmarks.optimise import precision
from benchmarks.settings import BenchSettings
from benchmarks.timing import Timing, time_runs

ACCURACY_TOLERANCE_POINTS = 0.5  # the bound on ours vs naive accuracy


@dataclass
class Context:
    settings: BenchSettings
    device: torch.device
    models: Models  # our path: optimised in place on CUDA
    naive: Models  # fp32 eager copies of the same weights
    images: torch.Tensor  # (N, 1, S, S) on the device
    labels: torch.Tensor
    peak_tflops: float | None
    log: Callable[[str], None]

    def precision(self) -> contextlib.AbstractContextManager:
        return precision(self.settings.optimisations, self.device)

    def batches(self, large: int) -> tuple[int, ...]:
        """Batch 1 and the large batch."""
        return (1,) if large == 1 else (1, large)

    def time(self, work: Callable[[], Any], images: int, *, attack: bool = False) -> tuple[Timing, Any]:
        s = self.settings
        warmup, repeats = (s.attack_warmup, s.attack_repeats) if attack else (s.warmup, s.repeats)
        return time_runs(work, images, warmup=warmup, repeats=repeats, device=self.device)


def prediction_check(ours_logits: torch.Tensor, naive_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Prediction agreement and accuracy (%) of both paths on the same images, against the 0.5-point bound."""
    ours, naive = ours_logits.argmax(1).cpu(), naive_logits.argmax(1).cpu()
    labels = labels.cpu()
    accuracy_ours = 100.0 * float((ours == labels).float().mean())
    accuracy_naive = 100.0 * float((naive == labels).float().mean())
    delta = accuracy_ours - accuracy_naive
    return {
        "images": int(labels.numel()),
        "prediction_agreement": round(float((ours == naive).float().mean()), 4),
        "accuracy_ours": round(accuracy_ours, 2),
        "accuracy_naive": round(accuracy_naive, 2),
        "accuracy_delta_points": round(delta, 2),
        "within_0_5_points": abs(delta) <= ACCURACY_TOLERANCE_POINTS,
    }


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())
