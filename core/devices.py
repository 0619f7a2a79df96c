"""The name of the device a figure was computed on, recorded beside every result that holds one."""

from __future__ import annotations

import torch


def device_name(where: torch.device | torch.Tensor | torch.nn.Module) -> str:
    """The device of a tensor, or of a module's first parameter: "cpu", or "cuda (NVIDIA H200)" with the
    card's name. Recorded because one seed draws other noise on a CUDA generator than on a CPU one (the
    purifiers', certify's), so a figure is reproduced only on the device type it names."""
    if isinstance(where, torch.nn.Module):
        where = next(where.parameters()).device
    elif isinstance(where, torch.Tensor):
        where = where.device
    return f"cuda ({torch.cuda.get_device_name(where)})" if where.type == "cuda" else where.type
