"""Training checkpoints without pickle: tensors as safetensors, hyper-parameters and counters as JSON.

`torch.save` of an optimizer pickles it; a checkpoint that resumes training must not be a file that
can run code when loaded, so every trainer (classifier, DDPM, cold diffusion) goes through here.

A checkpoint is committed by one atomic step, the replacement of checkpoint/state.json, which names
the folder holding its tensor files: a run killed, or out of disk, in the middle of a save resumes
from the last complete checkpoint, never from weights of one epoch beside the counters of another.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from core.errors import PurifyLabError
from core.paths import write_new_file
from core.train.runs import check_same_data
from core.weights import card_path, read_card, sha256_of

# What --resume may change: the budgets (how long the run goes on), the CPU threads (how fast, not
# what it learns) and the resume flag itself. Any other setting would leave the card misstating how
# the checkpoint's epochs were trained.
RESUMABLE = ("epochs", "max_minutes", "max_steps", "threads", "resume")

# The commit record: the loop state, the optimizer's param groups and `tensors`, the name of the
# folder beside it that holds this checkpoint's safetensors files.
STATE_FILE = "state.json"


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


@contextmanager
def reporting_write_failures(directory: Path) -> Iterator[None]:
    """A full disk or an unwritable file while a run saves (into `directory`, its checkpoint folder)
    ends it in one line that names the run folder and the way on, instead of a safetensors or OS traceback."""
    try:
        yield
    except (OSError, SafetensorError) as error:
        if (directory / STATE_FILE).is_file():
            then = "its last complete checkpoint is kept: make room and rerun with --resume to continue from it"
        else:
            then = "it has no complete checkpoint yet: make room and rerun with --overwrite to start over"
        raise PurifyLabError(f"cannot save the run in {directory.parent}: {_reason(error)}; {then}") from None


def _reason(error: OSError | SafetensorError) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def write_checkpoint(directory: Path, tensors: Mapping[str, Mapping[str, torch.Tensor]], state: dict) -> None:
    """Each of `tensors` as <name>.safetensors in a new folder of `directory`, flushed to disk, then
    `state` (with that folder's name) as state.json by os.replace: a reader sees the old checkpoint
    or the new one, whole. What the old one held is removed only after that. The folder and files
    follow the umask (`write_new_file`), so that a group sharing the run folder can --resume it."""
    with reporting_write_failures(directory):
        directory.mkdir(parents=True, exist_ok=True)
        folder = directory / f"tensors-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        staged = directory / f"{STATE_FILE}.partial"
        try:
            for name, named_tensors in tensors.items():
                write_new_file(folder / f"{name}.safetensors", save(dict(named_tensors)))
            _flush_to_disk(folder)
            staged.write_text(json.dumps(state | {"tensors": folder.name}, indent=1))
            _flush_to_disk(staged)
        except (OSError, SafetensorError):
            shutil.rmtree(folder, ignore_errors=True)  # the space it took, back for the next try
            raise
        os.replace(staged, directory / STATE_FILE)
        _flush_to_disk(directory)
    for stale in directory.iterdir():  # the previous checkpoint, or one a kill left half-written
        if stale.name not in (STATE_FILE, folder.name):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _flush_to_disk(path: Path) -> None:
    """fsync a file or folder: without it, a power cut after os.replace can leave state.json naming
    tensor files whose bytes never reached the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_state(directory: Path) -> dict:
    """The committed state.json of the checkpoint in `directory`; one line naming --overwrite when it
    cannot be read (a disk that failed, a file cut or edited by hand)."""
    path = directory / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise _unreadable(directory, path, error) from None
    if not isinstance(state, dict):
        raise _unreadable(directory, path, f"a JSON {type(state).__name__}, not an object")
    return state


def checkpoint_tensors(directory: Path, state: dict, name: str) -> dict[str, torch.Tensor]:
    """<name>.safetensors of the checkpoint `state` commits (in `directory` itself for checkpoints
    written before the tensors had a folder of their own); one line naming --overwrite when unreadable."""
    path = directory / state.get("tensors", "") / f"{name}.safetensors"
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise _unreadable(directory, path, error) from None


def _unreadable(directory: Path, path: Path, error: OSError | SafetensorError | ValueError | str) -> PurifyLabError:
    reason = _reason(error) if isinstance(error, OSError | SafetensorError) else str(error)
    return PurifyLabError(f"--resume: the checkpoint in {directory} cannot be read ({path.name}: {reason}); pass --overwrite to start over")


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, **more: Mapping[str, torch.Tensor]) -> None:
    """A run's resumable state: the model and optimizer moments (and any `more` tensors, such as EMA
    weights) as safetensors, the loop's counters and history with the optimizer's param groups as JSON."""
    moments, param_groups = optimizer_tensors(optimizer)
    model_tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    write_checkpoint(directory, {"model": model_tensors, "optimizer": moments, **more}, state | {"param_groups": param_groups})


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what `save_checkpoint` wrote into model and optimizer; returns the loop state."""
    state = read_state(directory)
    model_tensors, moments = checkpoint_tensors(directory, state, "model"), checkpoint_tensors(directory, state, "optimizer")
    param_groups = state["param_groups"] if "param_groups" in state else _old_classifier_param_groups(directory)
    try:
        model.load_state_dict(model_tensors)
        restore_optimizer(optimizer, moments, param_groups)
    except (RuntimeError, ValueError, KeyError):  # torch's list of every key that differs, in one line instead
        raise PurifyLabError(
            f"--resume: the checkpoint in {directory} does not fit the {type(model).__name__} this run builds; pass --overwrite to start over"
        ) from None
    return state


def _old_classifier_param_groups(directory: Path) -> list[dict]:
    """Where a classifier checkpoint kept its param groups before they moved into state.json."""
    path = directory / "optimizer.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise _unreadable(directory, path, error) from None


def save_ema_checkpoint(directory: Path, model: torch.nn.Module, ema, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """A denoiser's resumable state (DDPM and cold diffusion): `save_checkpoint` with the EMA shadow weights."""
    names = [name for name, _ in model.named_parameters()]
    shadow = {n: p.detach().cpu().contiguous() for n, p in zip(names, ema.shadow_params, strict=True)}
    save_checkpoint(directory, model, optimizer, state | {"ema_optimization_step": ema.optimization_step}, ema=shadow)


def load_ema_checkpoint(directory: Path, model: torch.nn.Module, ema, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what `save_ema_checkpoint` wrote into model, ema and optimizer; returns the loop state."""
    state = load_checkpoint(directory, model, optimizer)
    shadow = checkpoint_tensors(directory, state, "ema")
    ema.shadow_params = [shadow[name].to(p.device) for name, p in model.named_parameters()]
    ema.optimization_step = state["ema_optimization_step"]
    return state


def ema_copy(model: torch.nn.Module, ema) -> torch.nn.Module:
    """A detached copy of the model carrying the EMA weights (what is evaluated and shipped)."""
    averaged = copy.deepcopy(model)
    ema.copy_to(averaged.parameters())
    return averaged.eval().requires_grad_(False)


def resume_state(out_dir: Path, config: dict) -> dict:
    """The loop state (checkpoint/state.json) of the run in `out_dir`, once its resolved config
    (config.json) is found to equal `config` but for the RESUMABLE settings; one line otherwise."""
    checkpoint_dir, config_path = out_dir / "checkpoint", out_dir / "config.json"
    if not (checkpoint_dir / STATE_FILE).is_file():
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
    return read_state(checkpoint_dir)


def check_resumed_data(out_dir: Path, state: dict, data_dir: str | Path, data_hash: str) -> None:
    """--resume's words for `check_same_data`: a resumed run goes on with the data its checkpoint was
    trained on (state.json's `data_hash`), or the history would compare epochs across two splits."""
    then = "resume with the run's own --data, or pass --overwrite to start over"
    check_same_data(state, data_dir, data_hash, f"--resume: the run in {out_dir}", then)


def check_unfinished(out_dir: Path, epochs_done: int, state: dict, config) -> None:
    """Resuming a run with nothing left to train is refused, instead of announcing epoch 3 of 2 and
    publishing the same model again: in one line naming every limit it reached, so that raising one
    is not met by a refusal over the next. `epochs_done` counts an epoch a limit cut short too (a
    resume goes on at the next), so a run stopped by one is not called finished."""
    seconds, steps = state["seconds"], state["step"]
    max_steps = getattr(config, "max_steps", None)
    steps_reached = max_steps is not None and steps >= max_steps
    reached, to_raise = [], []
    if epochs_done >= config.epochs:
        history = state.get("history") or [{}]
        if history[-1].get("stopped_by_time_budget"):
            reached.append(f"has run {epochs_done} of {config.epochs} epochs, the last stopped by the time budget (a resume goes on at the next epoch)")
        elif steps_reached:
            reached.append(f"has run {epochs_done} of {config.epochs} epochs")
        else:
            reached.append(f"is finished ({epochs_done} of {config.epochs} epochs)")
        to_raise.append("--epochs")
    if config.max_minutes is not None and seconds >= 60 * config.max_minutes:
        reached.append(f"has spent its {config.max_minutes}-minute budget ({seconds / 60:.2f} min)")
        to_raise.append("--max-minutes")
    if steps_reached:
        reached.append(f"has reached its max_steps ({steps} of {max_steps})")
        to_raise.append("max_steps")
    if reached:
        raise PurifyLabError(f"--resume: the run in {out_dir} {_listed(reached)}; raise {_listed(to_raise)} to train on, or pass --overwrite to start over")


def _listed(items: list[str]) -> str:
    """The limits as one sentence: "a and b", "a, b and c"."""
    return " and ".join(items) if len(items) < 3 else f"{', '.join(items[:-1])} and {items[-1]}"


def only_publish_left(out_dir: Path, epochs_done: int, state: dict, config, weights_path: Path, figures: str) -> bool:
    """Whether --resume of the run in `out_dir` has only its publish left to do: its training is over
    but its model at `weights_path` is not in place whole (a Ctrl-C while it was published), so the
    trainer publishes it from the checkpoint instead of refusing it as finished and losing the run.
    A finished run whose model is in place is refused as `check_unfinished` says."""
    try:
        check_unfinished(out_dir, epochs_done, state, config)
    except PurifyLabError:
        if is_published(weights_path, out_dir / "checkpoint", figures):
            raise
        return True
    return False


def publishing_note(name: str) -> str:
    """What a resumed run with only its publish left (`only_publish_left`) says before it publishes."""
    return f"publishing {name}: its run is finished, but its model and card were not written whole"


def is_published(weights_path: Path, checkpoint_dir: Path, figures: str) -> bool:
    """Whether a run's model is in place whole: the file beside a card that vouches for its bytes
    (SHA-256) and holds its `figures`, written after the run's last checkpoint (an older card is of a
    model the run has trained past since, or of a former run)."""
    try:
        card = read_card(weights_path)
    except PurifyLabError:
        return False
    return (
        weights_path.is_file()
        and figures in card
        and card.get("sha256") == sha256_of(weights_path)
        and card_path(weights_path).stat().st_mtime_ns >= (checkpoint_dir / STATE_FILE).stat().st_mtime_ns
    )
