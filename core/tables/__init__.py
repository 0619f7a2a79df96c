"""Robustness tables, sweeps and detection ROCs from one preset file (configs/<name>.yaml).

    preset = load_preset("paper-table1").with_overrides(limit=32)
    outcome = run_preset(preset, store_path="results/results.sqlite", out_dir="results/paper-table1")
    print(outcome.markdown)

Cells go through the results store (cached, resumable); see runner.py for what a cell is and
render.py for the outputs and the gradient-masking checks reported with every table. runner.py
imports torch (seconds): it loads when a table is computed, not when a stored one is shown.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PurifyLabError
from core.paths import RESULTS_DIR, RESULTS_STORE
from core.results import ResultStore
from core.tables.preset import (
    AttackRow,
    DetectionSpec,
    ModelSpec,
    Preset,
    PresetHeading,
    PurifierColumn,
    SanitySpec,
    SweepSpec,
    TableSpec,
    list_presets,
    load_preset,
    preset_from_dict,
    preset_heading,
)
from core.tables.render import check_replaceable, write_outputs


@dataclass(frozen=True)
class TableOutcome:
    markdown: str
    paths: dict[str, Path]
    records: list[dict]
    computed: list[str]
    reused: list[str]


def run_preset(
    preset: Preset,
    store_path: str | Path = RESULTS_STORE,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_cell: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> TableOutcome:
    """Compute (or reuse) every cell of `preset` and write its outputs to out_dir (default RESULTS_DIR/<name>).

    Outputs of other settings in out_dir are refused before any compute unless `overwrite` (check_replaceable),
    and again just before writing, under a lock on out_dir: another run may have written there meanwhile."""
    from core.attacks.robust import process_state
    from core.tables.runner import PresetRunner

    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR / preset.name
    check_replaceable(preset, out_dir, overwrite)
    state = process_state()
    with ResultStore(store_path) as store:
        runner = PresetRunner(preset, store, progress=progress and state.is_main_process)
        records = runner.run(on_cell=on_cell)
    paths = {}
    if state.is_main_process:
        with _writing_alone(out_dir):
            try:
                check_replaceable(preset, out_dir, overwrite)
            except PurifyLabError as error:
                raise PurifyLabError(f"{error} (written there while this run computed; its cells are kept in {store_path}, so a rerun reuses them)") from None
            paths = write_outputs(preset, records, out_dir)
    markdown = paths["markdown"].read_text() if paths else ""
    return TableOutcome(markdown, paths, records, runner.last_computed, runner.last_reused)


@contextmanager
def _writing_alone(out_dir: Path) -> Iterator[None]:
    """One process at a time checks and writes `out_dir`: two runs finishing together both passed the
    check and the later silently replaced the other's table. An flock on the folder itself leaves no
    lock file behind and is released if the process dies."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(out_dir, os.O_RDONLY)
    except OSError as error:
        raise PurifyLabError(f"cannot write --out-dir {out_dir}: {error.strerror or error}") from None
    try:
        with suppress(OSError):  # a file system without flock on a folder (NFS): the check still runs, unlocked
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def __getattr__(name: str) -> Any:
    """`from core.tables import PresetRunner` imports runner.py (torch) on first use only (PEP 562)."""
    if name == "PresetRunner":
        from core.tables.runner import PresetRunner

        return PresetRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttackRow",
    "DetectionSpec",
    "ModelSpec",
    "Preset",
    "PresetHeading",
    "PresetRunner",
    "PurifierColumn",
    "SanitySpec",
    "SweepSpec",
    "TableOutcome",
    "TableSpec",
    "list_presets",
    "load_preset",
    "preset_from_dict",
    "preset_heading",
    "run_preset",
]
