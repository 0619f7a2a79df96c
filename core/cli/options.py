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


def positive(option: str, at_least_one: bool = False) -> Callable[[float | None], float | None]:
    """A callback refusing a value <= 0 (below 1 for a count) in the flag's own name, before torch is imported."""

    def check(value: float | None) -> float | None:
        if value is not None and not (value >= 1 if at_least_one else value > 0):
            raise PurifyLabError(f"{option} must be {'>= 1' if at_least_one else '> 0'}, got {value}")
        return value

    return check


def at_least_one(option: str) -> Callable[[float | None], float | None]:
    """A callback refusing a count below 1 in the flag's own name (not the field it fills), before torch is imported."""
    return positive(option, at_least_one=True)


def within(option: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[float | None], float | None]:
    """A callback refusing a value outside [low, high] (an open end excluded; NaN too) in the flag's own
    name, before torch is imported: the config's own check comes after the import and names its field."""

    def check(value: float | None) -> float | None:
        if value is not None and not ((value > low if low_open else value >= low) and (value < high if high_open else value <= high)):
            raise PurifyLabError(f"{option} must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, got {value}")
        return value

    return check


def parse_param_options(options: list[str], where: str = "--param") -> dict[str, str]:
    """`["t_star=0.1", "steps=5"]` -> {"t_star": "0.1", "steps": "5"}; one-line error otherwise."""
    params: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise PurifyLabError(f"{where} '{option}' is not of the form key=value")
        params[key.strip()] = value.strip()
    return params


def parse_purifier_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'ddpm:t_star=0.04,steps=5' -> ('ddpm', {'t_star': '0.04', 'steps': '5'})."""
    name, _, rest = spec.partition(":")
    if not name.strip():
        raise PurifyLabError(f"purifier '{spec}' has no name; write NAME or NAME:k=v,...")
    items = [part.strip() for part in rest.split(",") if part.strip()]
    return name.strip(), parse_param_options(items, where=f"purifier parameter in '{spec}'")


def _named(option: str, check: Callable[[str], object]) -> Callable[[str | None], str | None]:
    """A callback running a registry's torch-free name check on the flag's value, its refusal prefixed
    with the flag: the trainer's own check came after torch and timm had loaded (4-10 s)."""

    def callback(value: str | None) -> str | None:
        if value is not None:
            try:
                check(value)
            except PurifyLabError as error:
                raise PurifyLabError(f"{option}: {error}") from None
        return value

    return callback


def known_classifier(option: str) -> Callable[[str | None], str | None]:
    """A callback refusing a classifier name the registry does not hold."""

    def check(name: str) -> None:
        from core.models import classifiers

        classifiers.check(name)

    return _named(option, check)


def known_purifier_spec(option: str) -> Callable[[str | None], str | None]:
    """A callback refusing a NAME:k=v,... whose purifier the registry does not hold (its settings are
    checked against the purifier's config, which needs torch)."""

    def check(spec: str) -> None:
        from core.purifiers import PURIFIERS

        PURIFIERS.check(parse_purifier_spec(spec)[0])

    return _named(option, check)


def _known_split(value: str | None) -> str | None:
    """--split names one of the splits `core.data.loading` reads; refused before it (and torch) is imported."""
    from core.data import SPLITS

    if value is not None and value not in SPLITS:
        raise PurifyLabError(f"--split {value} is unknown; choose one of: {', '.join(SPLITS)}")
    return value


def count_option(flag: str, help: str) -> typer.models.OptionInfo:
    """An optional count (>= 1), refused in the flag's own name before torch is imported."""
    return typer.Option(flag, help=help, callback=at_least_one(flag))


def split_option(help: str) -> typer.models.OptionInfo:
    """--split with its name check; `help` says what the split reads in that command."""
    return typer.Option("--split", help=help, callback=_known_split)


def seed_option(help: str = "random seed") -> typer.models.OptionInfo:
    """--seed with its range check; `help` says what the seed draws in that command."""
    return typer.Option("--seed", help=f"{help} (0 to {SEED_MAX})", callback=_check_seed)


Device = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default: cuda if available)")]
DeviceDefaultCpu = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default cpu)")]
Threads = Annotated[int | None, typer.Option("--threads", help="torch CPU threads (>= 1)", callback=positive("--threads", at_least_one=True))]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="continue from the run folder's checkpoint with the same settings; only --epochs and --max-minutes may grow"),
]
MaxMinutes = Annotated[
    float | None,
    typer.Option(
        "--max-minutes", help="stop training after this many minutes of wall-clock time, counted across resumes (> 0)", callback=positive("--max-minutes")
    ),
]
Epochs = Annotated[int | None, typer.Option("--epochs", help="override the preset's epochs (>= 1)", callback=positive("--epochs", at_least_one=True))]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="override the preset's batch size (>= 1)", callback=positive("--batch-size", at_least_one=True))
]
LearningRate = Annotated[float | None, typer.Option("--lr", help="override the preset's learning rate (> 0)", callback=positive("--lr"))]
Ship = Annotated[bool, typer.Option("--ship", help="copy the result and its card into weights/ (not from --preset tiny)")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace existing output files that purifylab did not write (never an input)")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress")]
ClassifierWeights = Annotated[Path | None, typer.Option("--weights", help="a specific .safetensors instead of weights/<classifier> (its card beside it)")]
ResultsStore = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite results store, cached and resumable (default: results/results.sqlite of the repository, or in $PURIFYLAB_RESULTS)"),
]
