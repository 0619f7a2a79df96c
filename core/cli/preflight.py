"""Checks a command runs on its inputs before it imports torch or builds a model.

Importing torch alone takes 2-7 s on 2 busy cores, so a bad file, a missing folder or an output
path that cannot be written is refused here, in well under a second, instead of after the imports
or, worse, after the compute.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import typer

from core.cli.reporting import config_path, written_by_purifylab
from core.errors import PurifyLabError
from core.paths import WEIGHTS_DIR

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
# Where an option's value came from when the user did not give it. Compared by name: recent typer ships
# its own copy of click, whose ParameterSource is not click's.
_NOT_GIVEN = ("DEFAULT", "DEFAULT_MAP")


def check_data(path: Path, option: str = "--data") -> Path:
    if not path.exists():
        raise PurifyLabError(f"{option} {path} does not exist")
    return path


def check_data_layout(path: Path, split: str | None = None, option: str = "--data") -> Path:
    """--data exists and is laid out as a data set, by listing it (no decoding, no torch): a single
    image, a folder of DICOM files or a wrong-key .npz is refused before the model is built."""
    check_data(path, option)
    from core.data.sources import data_listing

    data_listing(path, split)
    return path


def check_output(
    path: Path | None,
    option: str,
    *,
    inputs: tuple[Path | None, ...] = (),
    overwrite: bool = False,
    suffix: str | None = None,
    creates_folder: bool = False,
) -> Path | None:
    """Refuse, before any compute, an output file that would destroy user data or fail at the end.

    Every output is written with its resolved config beside it (`config_path`); an existing file is
    replaced only when it and that config both exist and the config carries purifylab's provenance
    (`written_by_purifylab`: another tool's NAME.json beside NAME.png, a labelme annotation, is JSON
    too), or with --overwrite.
    An input is never replaced. The folder must exist (or be creatable) and accept a new file.
    Returns `path` (None: no output)."""
    if path is None:
        return None
    sibling = config_path(path)
    for target in (path, sibling):
        if target.is_dir():
            where = "" if target == path else f"its config {target} "
            raise PurifyLabError(f"{option} {path}: {where}is a folder; name another file")
        if any(_same_file(target, given) for given in inputs if given is not None):
            raise PurifyLabError(f"{option} {target} is one of the command's inputs; choose another name")
    if suffix is not None and path.suffix.lower() != suffix:
        raise PurifyLabError(f"{option} {path} must end in {suffix}")
    if not overwrite:
        taken = [target for target in (path, sibling) if target.exists()]
        if taken and not (len(taken) == 2 and written_by_purifylab(_read_json(sibling))):
            beside = f" ({sibling} beside it carries no purifylab provenance)" if len(taken) == 2 else ""
            raise PurifyLabError(f"{option}: {taken[0]} exists and purifylab did not write it{beside}; pass --overwrite or choose another name")
    _check_writable(path, option, creates_folder)
    return path


def with_config(option: str, path: Path | None) -> dict[str, Path]:
    """An output and the resolved config written beside it, named as a refusal names them."""
    return {} if path is None else {option: path, f"{option}'s config": config_path(path)}


def check_distinct_outputs(files: dict[str, Path]) -> None:
    """No two files a command writes are one file: the later would silently replace the earlier
    after the compute (certify --json certified_curve.json lost its result to the curve's config)."""
    written: dict[Path, str] = {}
    for name, path in files.items():
        where = path.resolve()
        if where in written:
            raise PurifyLabError(f"{written[where]} and {name} would both be written to {path}; one would replace the other, so choose another name")
        written[where] = name


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _read_json(path: Path) -> object:
    """The JSON document at `path`, or None when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_json_object(path: Path) -> bool:
    return isinstance(_read_json(path), dict)


def _check_writable(path: Path, option: str, creates_folder: bool) -> None:
    """A new file can be created in the output's folder (or its nearest existing ancestor, when the
    command creates the folder), and an existing output can be rewritten."""
    if not path.parent.is_dir() and not creates_folder:
        raise PurifyLabError(f"the folder of {option} {path} does not exist; create it first")
    _check_can_create_in(path.parent, option, path)
    try:
        if path.exists():
            with path.open("r+b"):
                pass
    except OSError as error:
        raise PurifyLabError(f"cannot write {option} {path}: {error.strerror or error}") from None


def _check_can_create_in(folder: Path, option: str, shown: Path) -> None:
    """A file can be created in `folder`, or in its nearest existing ancestor when the command will
    create the folder; `shown` is the path the user gave, as the message names it."""
    existing = next((candidate for candidate in (folder, *folder.parents) if candidate.exists()), Path.cwd())
    if not existing.is_dir():
        raise PurifyLabError(f"{option} {shown}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PurifyLabError(f"cannot write {option} {shown}: {error.strerror or error}") from None


def check_output_folder(path: Path | None, option: str) -> Path | None:
    """An output folder may exist or not, but must not be a file, and a file must be creatable in it
    (or in its nearest existing ancestor, when the command creates it): not found out after the compute."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise PurifyLabError(f"{option} {path} is a file; name a folder")
    _check_can_create_in(path, option, path)
    return path


def check_run(data: Path | None, out: Path | None, out_option: str, device: str | None) -> str:
    """What a command that reads a data folder and writes an output folder checks first; returns use_device's answer."""
    if data is not None:
        check_data(data)
    check_output_folder(out, out_option)
    return use_device(device)


def check_run_folder(run_dir: Path, resume: bool, overwrite: bool, files: tuple[str, ...] = ("config.json",)) -> Path:
    """A training run folder that holds a checkpoint is continued (--resume) or started over
    (--overwrite), never replaced silently; one stopped before its first complete checkpoint, or
    whose checkpoint is damaged, can only be started over, and says so. Its other `files` follow
    `check_output`'s rule with the run's resolved config (config.json) as their config: replaced only
    beside one purifylab wrote, or with --overwrite. That config (core.train.runs.open_run_folder) is
    the training settings alone, with no provenance to recognise it by, so any JSON object counts.
    The shipped weights folder is never a run folder (--ship copies into it), and the folder must be
    writable, before any data is read."""
    check_output_folder(run_dir, "--out")
    check_not_weights_folder(run_dir, "--out")
    checkpoint = run_dir / "checkpoint"
    if checkpoint.exists() and not overwrite:
        # checkpoint/state.json commits a checkpoint (core.train.checkpoint): without a readable one, a
        # run stopped in its first save, or a damaged one, has nothing --resume could continue
        if not _is_json_object(checkpoint / "state.json"):
            raise PurifyLabError(
                f"--out {run_dir} holds a training run without a complete checkpoint (no readable checkpoint/state.json), so --resume "
                "has nothing to continue; pass --overwrite to start over"
            )
        if not resume:
            raise PurifyLabError(f"--out {run_dir} holds a training run; pass --resume to continue it or --overwrite to start over")
    taken = [run_dir / name for name in files if (run_dir / name).exists()]
    if taken and not overwrite and not _is_json_object(run_dir / "config.json"):
        raise PurifyLabError(f"--out: {taken[0]} exists and purifylab did not write it; pass --overwrite or choose another folder")
    _check_writable(run_dir / "config.json", "--out", creates_folder=True)
    return run_dir


def check_not_weights_folder(folder: Path, option: str) -> Path:
    """A run's or a soup's folder is never the shipped weights folder: its files would replace or sit
    among the shipped models and their cards (--ship copies a finished model there)."""
    if _same_file(folder, WEIGHTS_DIR):
        raise PurifyLabError(f"{option} {folder} is the shipped weights folder; write into another folder (--ship copies the result into weights/)")
    return folder


def check_not_shipped(preset: str, target: Path, option: str) -> Path:
    """A --preset tiny run is a 32-px smoke test: it never replaces, or joins, the shipped models."""
    if preset == "tiny" and _same_file(target.parent, WEIGHTS_DIR):
        raise PurifyLabError(f"{option} {target}: a --preset tiny test run must never replace a shipped model in {WEIGHTS_DIR}; write it elsewhere")
    return target


def check_shippable(preset: str) -> None:
    """--ship copies a run into the shipped weights folder: never a --preset tiny one (a 32-px smoke
    test), refused before any training."""
    if preset == "tiny":
        raise PurifyLabError(f"--ship: a --preset tiny test run must never replace a shipped model in {WEIGHTS_DIR}; drop --ship")


def check_eot_has_attack(eot: int, attack: str | None, threat: str) -> None:
    """--eot counts purifier draws per attack step: without --attack, or under a threat model whose
    attacker draws none (grey, transfer, bpda), it would be recorded beside the number, never used."""
    if eot == 1:
        return
    if attack is None:
        raise PurifyLabError(f"--eot {eot} counts purifier draws per attack step, but no --attack was given; drop --eot or name an attack")
    from core.attacks import THREAT_MODELS, threat_model

    if not threat_model(threat).uses_eot:
        users = ", ".join(name for name, spec in THREAT_MODELS.items() if spec.uses_eot)
        raise PurifyLabError(f"--eot {eot} does not apply to --threat {threat}, whose attacker draws no purifier samples; it is used by {users}")


def given_options(context: typer.Context, options: tuple[str, ...]) -> list[tuple[str, object]]:
    """(flag, value) of each of the running command's `options` (parameter names) that the user gave, even
    at its default value: a typed setting that the command would ignore is refused whatever its value."""
    return [
        (parameter.opts[0], context.params[parameter.name])
        for parameter in context.command.params
        if parameter.name in options and context.get_parameter_source(parameter.name).name not in _NOT_GIVEN
    ]


def check_attack_options_need_attack(context: typer.Context, attack: str | None, options: tuple[str, ...]) -> None:
    """The command's `options` set the attack: without --attack, one given would be recorded beside a
    clean-only figure (a JSON reading `threat white`), never used."""
    given = given_options(context, options) if attack is None else []
    if given:
        flag, value = given[0]
        raise PurifyLabError(f"{flag} {value} sets the attack, but no --attack was given; drop {flag} or name an attack")


def check_steps_apply(context: typer.Context, attack: str) -> None:
    """An attack with a fixed schedule of its own (AutoAttack) or a single step (FGSM) runs whatever --steps
    says, and a minimal-perturbation one (CW, DeepFool, EAD) finds its own size whatever --eps says: a given
    --steps or --eps would be recorded beside a number it did not set. An unknown attack is refused here,
    from the torch-free registry, before the attack library and torch are imported."""
    from core.attacks import ATTACKS

    spec = ATTACKS.get(attack)
    ignored = {
        "steps": spec.schedule or ("one step" if spec.single_step else ""),
        "eps": "" if spec.bounded else "a minimal-perturbation attack: it finds its own size",
    }
    for name, reason in ignored.items():
        given = given_options(context, (name,)) if reason else []
        if given:
            flag, value = given[0]
            raise PurifyLabError(f"--attack {attack} ignores {flag} {value} ({reason}); drop {flag}")


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
def resume_hint(message: str | Callable[[], str]) -> Iterator[None]:
    """Ctrl-C ends with one line on how to pick the run up, instead of click's bare 'Aborted!';
    a callable message is worked out when the interrupt comes."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {message() if callable(message) else message}", err=True)
        raise typer.Exit(130) from None


def training_resume_hint(run_dir: Path, resumed: bool) -> AbstractContextManager[None]:
    """`resume_hint` for a training run: --resume continues a committed checkpoint (checkpoint/state.json,
    core.train.checkpoint) that this command resumed from or saved, not an older one an --overwrite had
    yet to remove; without one the run starts over, with --overwrite where its folder holds files a
    plain rerun would refuse to replace. Once it said --resume whatever the folder held."""
    started = time.time()

    def message() -> str:
        state = run_dir / "checkpoint" / "state.json"
        if state.is_file() and (resumed or state.stat().st_mtime >= started):
            return "rerun the same command with --resume to continue from its last checkpoint"
        nothing = "the run saved no checkpoint, so there is nothing to resume; rerun the same command"
        return f"{nothing} with --overwrite to start over" if run_dir.is_dir() and any(run_dir.iterdir()) else f"{nothing} to start over"

    return resume_hint(message)
