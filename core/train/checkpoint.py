"""Training checkpoints without pickle: tensors as safetensors, hyper-parameters and counters as JSON.

`torch.save` of an optimizer pickles it; a checkpoint that resumes training must not be a file that
can run code when loaded, so every trainer (classifier, DDPM, cold diffusion) goes through here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.errors import PurifyLabError
from core.train.runs import check_same_data

# What --resume may change: the budgets (how long the run goes on), the CPU threads (how fast, not
# what it learns) and the resume flag itself. Any other setting would leave the card misstating how
# the checkpoint's epochs were trained.
RESUMABLE = ("epochs", "max_minutes", "max_steps", "threads", "resume")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """({"<param index>.<key>": tensor}, param_groups): the first for safetensors, the second for JSON."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": torch.as_tensor(value).detach().cpu().contiguous() for index, entry in state["state"].items() for key, value in entry.items()}
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> None:
    entries: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        entries.setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict({"state": entries, "param_groups": param_groups})


def save_ema_checkpoint(directory: Path, model: torch.nn.Module, ema, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """A denoiser's resumable state (DDPM and cold diffusion): model, EMA shadow weights and optimizer
    moments as safetensors, the loop's counters and history as JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in model.named_parameters()]
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    save_file({n: p.detach().cpu().contiguous() for n, p in zip(names, ema.shadow_params, strict=True)}, str(directory / "ema.safetensors"))
    moments, param_groups = optimizer_tensors(optimizer)
    save_file(moments, str(directory / "optimizer.safetensors"))
    state = state | {"param_groups": param_groups, "ema_optimization_step": ema.optimization_step}
    (directory / "state.json").write_text(json.dumps(state, indent=1))


def load_ema_checkpoint(directory: Path, model: torch.nn.Module, ema, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what `save_ema_checkpoint` wrote into model, ema and optimizer; returns the loop state."""
    state = json.loads((directory / "state.json").read_text())
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    shadow = load_file(str(directory / "ema.safetensors"))
    ema.shadow_params = [shadow[name].to(p.device) for name, p in model.named_parameters()]
    ema.optimization_step = state["ema_optimization_step"]
    restore_optimizer(optimizer, load_file(str(directory / "optimizer.safetensors")), state["param_groups"])
    return state


def ema_copy(model: torch.nn.Module, ema) -> torch.nn.Module:
    """A detached copy of the model carrying the EMA weights (what is evaluated and shipped)."""
    averaged = copy.deepcopy(model)
    ema.copy_to(averaged.parameters())
    return averaged.eval().requires_grad_(False)


def resume_state(out_dir: Path, config: dict) -> dict:
    """The loop state (checkpoint/state.json) of the run in `out_dir`, once its resolved config
    (config.json) is found to equal `config` but for the RESUMABLE settings; one line otherwise."""
    state_path, config_path = out_dir / "checkpoint" / "state.json", out_dir / "config.json"
    if not state_path.is_file():
        raise PurifyLabError(f"--resume: {out_dir} holds no checkpoint to continue; drop --resume to start a new run there")
    try:
        saved = json.loads(config_path.read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise PurifyLabError(
            f"--resume: {config_path} is missing or not a run's config, so the checkpoint's settings are unknown; pass --overwrite to start over"
        )
    given = json.loads(json.dumps(config))  # tuples as lists, as config.json holds them
    differing = [key for key in sorted(saved.keys() | given.keys()) if key not in RESUMABLE and saved.get(key) != given.get(key)]
    if differing:
        changes = ", ".join(f"{key} {saved.get(key)!r} -> {given.get(key)!r}" for key in differing)
        raise PurifyLabError(
            f"--resume: the run in {out_dir} was trained with other settings ({changes}); only --epochs and --max-minutes "
            "may change when resuming; pass --overwrite to start over"
        )
    return json.loads(state_path.read_text())


def check_resumed_data(out_dir: Path, state: dict, data_dir: str | Path, data_hash: str) -> None:
    """--resume's words for `check_same_data`: a resumed run goes on with the data its checkpoint was
    trained on (state.json's `data_hash`), or the history would compare epochs across two splits."""
    then = "resume with the run's own --data, or pass --overwrite to start over"
    check_same_data(state, data_dir, data_hash, f"--resume: the run in {out_dir}", then)


def check_unfinished(out_dir: Path, epochs_done: int, seconds: float, steps: int, config) -> None:
    """Resuming a run with nothing left to train is refused, naming the budget to raise, instead of
    announcing epoch 3 of 2 and publishing the same model again."""
    where = f"--resume: the run in {out_dir}"
    if epochs_done >= config.epochs:
        raise PurifyLabError(f"{where} is finished ({epochs_done} of {config.epochs} epochs); raise --epochs to train on, or pass --overwrite to start over")
    if config.max_minutes is not None and seconds >= 60 * config.max_minutes:
        raise PurifyLabError(
            f"{where} has spent its {config.max_minutes}-minute budget ({seconds / 60:.2f} min); raise --max-minutes to train on, "
            "or pass --overwrite to start over"
        )
    max_steps = getattr(config, "max_steps", None)
    if max_steps is not None and steps >= max_steps:
        raise PurifyLabError(f"{where} is finished: it reached its max_steps ({steps} of {max_steps}); pass --overwrite to start over")
