"""Checks a command runs on its inputs before it imports torch or builds a model.

Importing torch alone takes 2-7 s on 2 busy cores, so a bad file, a missing folder or an output
path that cannot be written is refused here, in well under a second, instead of after the imports
or, worse, after the compute.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from core.errors import PurifyLabError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_data(path: Path, option: str = "--data") -> Path:
    if not path.exists():
        raise PurifyLabError(f"{option} {path} does not exist")
    return path


def check_output_file(path: Path | None, option: str, *, creates_folder: bool = False) -> Path | None:
    """An output file's name must not be a folder, and its folder must exist unless the command
    creates it (None: no output)."""
    if path is None:
        return None
    if path.is_dir():
        raise PurifyLabError(f"{option} {path} is a folder; name a file inside it")
    if not creates_folder and not path.parent.is_dir():
        raise PurifyLabError(f"the folder of {option} {path} does not exist; create it first")
    return path


def check_output_folder(path: Path | None, option: str) -> Path | None:
    """An output folder may exist or not, but must not be a file."""
    if path is not None and path.exists() and not path.is_dir():
        raise PurifyLabError(f"{option} {path} is a file; name a folder")
    return path


def check_run(data: Path | None, out: Path | None, out_option: str, device: str | None) -> str:
    """What a command that reads a data folder and writes an output folder checks first; returns use_device's answer."""
    if data is not None:
        check_data(data)
    check_output_folder(out, out_option)
    return use_device(device)


def use_device(device: str | None) -> str:
    """--device for any command that computes: cpu hides CUDA, cuda[:N] insists on it (None: auto).

    Set through CUDA_VISIBLE_DEVICES before torch starts CUDA, so every layer (accelerate included)
    follows it without being passed a device. Returns where a command that places its own tensors
    puts them: "cpu" unless a CUDA device was asked for ("cuda": cuda:N is cuda once it is the only one).
    """
    if device is None:
        return "cpu"
    if not _DEVICE.match(device):
        raise PurifyLabError(f"--device must be cpu, cuda or cuda:N; got '{device}'")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if ":" in device:
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":")[1]
    import torch

    if not torch.cuda.is_available():
        raise PurifyLabError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return "cuda"


@contextmanager
def resume_hint(message: str) -> Iterator[None]:
    """Ctrl-C ends with one line on how to pick the run up, instead of click's bare 'Aborted!'."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {message}", err=True)
        raise typer.Exit(130) from None
