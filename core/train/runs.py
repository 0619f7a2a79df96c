"""What the three trainers (classifier, DDPM, cold diffusion) share about a run: how it starts, the
data it loads, what its card says about that data and its epochs, and the checks that keep a card
truthful, the data rule of every step that goes on from a run among them (`check_same_data`)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.data.loading import SPLIT_SEED, LoadedSplit, load_splits
from core.data.sources import SplitsInData
from core.data.splits import data_hash_of_folder
from core.errors import PurifyLabError

if TYPE_CHECKING:
    from accelerate import Accelerator


def load_training_splits(data_dir: str | Path, image_size: int, limit: int | None, progress: bool, channels: int = 1) -> tuple[LoadedSplit, LoadedSplit]:
    """The project's train and val splits of `data_dir`. Training cuts its own split of one folder or
    file, so data that ships splits of its own (a MedMNIST .npz, split folders) is refused in one line,
    not sent to a --split option the train commands do not have."""
    try:
        splits = load_splits(data_dir, ("train", "val"), image_size, limit, progress=progress, channels=channels)
    except SplitsInData as error:
        raise PurifyLabError(
            f"--data {data_dir} holds splits of its own ({', '.join(error.available)}); training cuts its own train/val split "
            "of one folder or file and cannot train on a data set's own splits yet"
        ) from None
    return splits["train"], splits["val"]


def card_data(data_dir: str | Path, train: LoadedSplit) -> dict:
    """A card's `data`: the folder, its hash, the split in the loader's own words (`LoadedSplit.cut`)
    and the number of training images; each trainer adds what else it knows."""
    path = Path(data_dir)
    try:  # the file list, undecodable files included: what `resolve_split` can check without decoding
        listed = {"listed_hash": data_hash_of_folder(path)}
    except PurifyLabError:  # data holding splits of its own is never read whole, so never by default
        listed = {}
    return {
        "folder": "/".join(path.parts[-2:]) if path.name == "train" else path.name,
        "data_hash": train.data_hash,
        **listed,
        "split": train.cut,
        "split_seed": SPLIT_SEED,
        "train_images": int(len(train.labels)),
    }


def training_device(module: nn.Module) -> dict:
    """{"training_device": ...} for a run on an accelerator, {} on the CPU: `core.weights.training_time`
    marks the minutes of a card that names one "(GPU)", since a GPU minute is not one of the project's
    CPU minutes; without it a GPU run's card read as the CPU recipe's time."""
    device = next(module.parameters()).device
    if device.type == "cpu":
        return {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    processes = torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
    return {"training_device": f"{processes} x {name} (torch {torch.__version__})"}


def check_same_data(recorded: Mapping, data_dir: str | Path, data_hash: str, trained: str, then: str) -> None:
    """The one rule of every step that goes on from what a run trained (--resume, `train calibrate`,
    `train soup`): it works on the data that run was trained on, known by the hash its checkpoint or
    card recorded (`card_data`: `data_hash` for the images that decoded, `listed_hash` for every file
    listed). Other data cuts another validation split, of other images, some perhaps trained on.
    Records written before the hash was kept carry none and are not checked."""
    recorded_hashes = [recorded[key] for key in ("data_hash", "listed_hash") if recorded.get(key)]
    if recorded_hashes and data_hash not in recorded_hashes:
        raise PurifyLabError(f"{trained} was trained on data with hash {recorded_hashes[0][:12]}, but --data {data_dir} has hash {data_hash[:12]}; {then}")


def completed_epochs(history: Sequence[dict], steps_per_epoch: int) -> int:
    """Epochs that ran all their steps (each record's cumulative `step` minus the one before): an
    epoch cut by the time budget or by max_steps is not a completed one."""
    steps = [record["step"] for record in history]
    return sum(after - before == steps_per_epoch for before, after in zip([0, *steps[:-1]], steps, strict=True))


def stopped_by_time_budget(history: Sequence[dict]) -> bool:
    """Whether a time budget stopped any session of the run: a resumed run goes on at the next epoch,
    so the epoch it cut stays cut (each record marks the session it ended)."""
    return any(record.get("stopped_by_time_budget") for record in history)


def start_accelerator(threads: int | None, seed: int) -> Accelerator:
    """The Accelerate process every trainer runs under, in one order: the CPU threads first (torch
    takes them before any work), then the process, then the seed of everything it draws."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if threads is not None:
        torch.set_num_threads(threads)
    accelerator = Accelerator()
    set_seed(seed)
    return accelerator


def open_run_folder(out_dir: Path, config, resumed: bool, leftovers: Sequence[str] = ()) -> None:
    """`out_dir` with the resolved config.json that a later --resume compares against (`resume_state`).
    A run started without --resume owns its folder: the checkpoint/ (and the `leftovers`, such as
    history and best weights) of a run there before is removed before the new config.json is
    written, so that a later --resume never continues the old run under the new settings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = () if resumed else ("checkpoint", *leftovers)
    for path in (out_dir / name for name in removed):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, sort_keys=True) + "\n")


def check_finite_loss(loss: float, step: int) -> float:
    """A NaN or infinite loss means the run diverged: stop before the update carries it into the
    weights and the checkpoint, so that nothing is published."""
    if not math.isfinite(loss):
        raise PurifyLabError(_diverged(f"the training loss became {loss} at step {step + 1}"))
    return loss


def check_finite_weights(module: nn.Module, step: int) -> None:
    """The update after the last finite loss can still overflow: checked before a checkpoint is saved."""
    if not all(bool(torch.isfinite(parameter).all()) for parameter in module.parameters()):
        raise PurifyLabError(_diverged(f"the weights became NaN or infinite by step {step}"))


def _diverged(what: str) -> str:
    return f"{what}: the run diverged and nothing was published; lower the learning rate and pass --overwrite to start over"
