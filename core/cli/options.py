"""Options that several commands share, declared once so their flags and help read the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from core.errors import PurifyLabError, check_range

SEED_MAX = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2**32 - 1]


def _check_seed(value: int | None) -> int | None:
    """One range for every command's --seed, refused before any compute."""
    if value is not None:
        check_range("--seed", value, 0, SEED_MAX)
    return value


def _positive(option: str, at_least_one: bool = False) -> Callable[[float | None], float | None]:
    """A callback refusing a value <= 0 (below 1 for a count) in the flag's own name, before torch is imported."""

    def check(value: float | None) -> float | None:
        if value is not None and not (value >= 1 if at_least_one else value > 0):
            raise PurifyLabError(f"{option} must be {'>= 1' if at_least_one else '> 0'}, got {value}")
        return value

    return check


def at_least_one(option: str) -> Callable[[float | None], float | None]:
    """A callback refusing a count below 1 in the flag's own name (not the field it fills), before torch is imported."""
    return _positive(option, at_least_one=True)


def count_option(flag: str, help: str) -> typer.models.OptionInfo:
    """An optional count (>= 1), refused in the flag's own name before torch is imported."""
    return typer.Option(flag, help=help, callback=at_least_one(flag))


def seed_option(help: str = "random seed") -> typer.models.OptionInfo:
    """--seed with its range check; `help` says what the seed draws in that command."""
    return typer.Option("--seed", help=f"{help} (0 to {SEED_MAX})", callback=_check_seed)


Device = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default: cuda if available)")]
DeviceDefaultCpu = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default cpu)")]
Threads = Annotated[int | None, typer.Option("--threads", help="torch CPU threads (>= 1)", callback=_positive("--threads", at_least_one=True))]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="continue from the run folder's checkpoint with the same settings; only --epochs and --max-minutes may grow"),
]
MaxMinutes = Annotated[
    float | None,
    typer.Option(
        "--max-minutes", help="stop training after this many minutes of wall-clock time, counted across resumes (> 0)", callback=_positive("--max-minutes")
    ),
]
Epochs = Annotated[int | None, typer.Option("--epochs", help="override the preset's epochs (>= 1)", callback=_positive("--epochs", at_least_one=True))]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="override the preset's batch size (>= 1)", callback=_positive("--batch-size", at_least_one=True))
]
LearningRate = Annotated[float | None, typer.Option("--lr", help="override the preset's learning rate (> 0)", callback=_positive("--lr"))]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace existing output files that purifylab did not write (never an input)")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress")]
ClassifierWeights = Annotated[Path | None, typer.Option("--weights", help="a specific .safetensors instead of weights/<classifier> (its card beside it)")]
ResultsStore = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite results store, cached and resumable (default: results/results.sqlite of the repository, or in $PURIFYLAB_RESULTS)"),
]
