"""Optimizer state without pickle: moments as flat safetensors tensors, hyper-parameters as JSON.

`torch.save` of an optimizer pickles it; a checkpoint that resumes training must not be a file that
can run code when loaded, so every trainer (classifier, DDPM, cold diffusion) goes through here.
"""

from __future__ import annotations

import torch


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """({"<param index>.<key>": tensor}, param_groups): the first for safetensors, the second for JSON."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": torch.as_tensor(value).detach().cpu().contiguous()
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> None:
    entries: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        entries.setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict({"state": entries, "param_groups": param_groups})
