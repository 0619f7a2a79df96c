"""Timed runs, FLOP counts and the figures derived from them (images/s, speedup, GFLOP/s, MFU)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of each timed run of a piece of work that handles `images` images."""

    seconds: tuple[float, ...]
    images: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.images / self.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_per_s": significant(self.images_per_s),
            "latency_s": round(self.median, 5),  # median seconds per run of `images` images
            "images": self.images,
            "seconds": [round(s, 5) for s in self.seconds],
        }


def significant(value: float, digits: int = 4) -> float:
    """Rounded to significant digits, not decimals: a slow path's 0.0123 img/s or a 0.016x speedup keeps its precision."""
    return float(f"{value:.{digits}g}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(work: Callable[[], Any], images: int, *, warmup: int, repeats: int, device: torch.device) -> tuple[Timing, Any]:
    """`warmup` untimed runs, then `repeats` timed ones; returns the timing and the last run's output."""
    output = None
    for _ in range(warmup):
        output = work()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        output = work()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return Timing(tuple(seconds), images), output


def count_flops(work: Callable[[], Any]) -> int:
    """FLOPs of one run as torch's FlopCounterMode counts them (matmuls, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return int(counter.get_total_flops())


def compare(ours: Timing, naive: Timing) -> dict[str, Any]:
    """Both timings and speedup = ours images/s / naive images/s."""
    return {"ours": ours.to_dict(), "naive": naive.to_dict(), "speedup": significant(ours.images_per_s / naive.images_per_s)}


def utilisation(flops_per_image: int | None, images_per_s: float, peak_tflops: float | None) -> dict[str, Any]:
    """Achieved GFLOP/s of our path, and MFU against the GPU's bf16 dense peak (None without one)."""
    if not flops_per_image:
        return {"flops_per_image": flops_per_image, "gflops_per_s": None, "mfu": None}
    achieved = flops_per_image * images_per_s
    return {
        "flops_per_image": flops_per_image,
        "gflops_per_s": round(achieved / 1e9, 3),
        "mfu": None if peak_tflops is None else round(achieved / (peak_tflops * 1e12), 5),
    }
