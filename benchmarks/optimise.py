"""Our path's GPU optimisations, each one switch, each a one-line use of a stock PyTorch feature.

None of them applies on a CPU: there every switch is reported as "skipped: no CUDA" and our path is
the engine's plain fp32 code, batched. They have not been measured yet (no GPU was available when
this suite was written): a `--device cuda` run is what measures them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from benchmarks.settings import Optimisations

NO_CUDA = "skipped: no CUDA"


def status(optimisations: Optimisations, device: torch.device) -> dict[str, str]:
    """What each switch did in this run: "on", "off", or why it was skipped."""
    return {name: "off" if not enabled else "on" if device.type == "cuda" else NO_CUDA for name, enabled in dataclasses.asdict(optimisations).items()}


def optimise(networks: Iterable[nn.Module], optimisations: Optimisations, device: torch.device) -> None:
    """channels_last and torch.compile, in place (the purifiers keep their references); CUDA only."""
    if device.type != "cuda":
        return
    for network in networks:
        if optimisations.channels_last:
            network.to(memory_format=torch.channels_last)
        if optimisations.compile:
            network.compile(mode="reduce-overhead" if optimisations.cuda_graphs else None)


def precision(optimisations: Optimisations, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast around our path's model calls on CUDA when switched on; fp32 otherwise."""
    if device.type == "cuda" and optimisations.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
