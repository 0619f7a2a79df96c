"""Options that several commands share, declared once so their flags and help read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Device = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default: cuda if available)")]
DeviceDefaultCpu = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default cpu)")]
Threads = Annotated[int | None, typer.Option("--threads", help="torch CPU threads")]
Resume = Annotated[bool, typer.Option("--resume", help="continue from the run folder's checkpoint")]
MaxMinutes = Annotated[float | None, typer.Option("--max-minutes", help="stop training after this many minutes of wall-clock time")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress")]
ClassifierWeights = Annotated[Path | None, typer.Option("--weights", help="a specific .safetensors instead of weights/<classifier> (its card beside it)")]
ResultsStore = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite results store, cached and resumable (default: results/results.sqlite of the repository, or in $PURIFYLAB_RESULTS)"),
]
