"""`purifylab table PRESET` and `purifylab sweep tstar|depth`: robustness tables and curves from configs/.

Both print Markdown to stdout and write CSV, JSON, plotly HTML and the resolved config beside it.
Several GPUs: `accelerate launch -m core table PRESET` shards each cell's images over the processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.cli import set_threads
from core.cli.options import Device, Progress, ResultsStore, Threads, at_least_one, count_option, seed_option, split_option
from core.cli.preflight import check_attack_options_need_attack, check_data_layout, check_eot_has_attack, check_run, check_steps_apply, resume_hint
from core.train.layout import check_split_not_carved_from_cohort, reporting_cohort_images

if TYPE_CHECKING:
    from core.tables.preset import Preset

Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace outputs in the output folder that purifylab did not write or wrote with other settings")]


def _print_outcome(outcome) -> None:
    """The Markdown on stdout; what was computed and where it went on stderr (only the main process writes)."""
    if outcome.markdown:
        typer.echo(outcome.markdown)
        typer.echo(
            f"cells computed {len(outcome.computed)}, reused {len(outcome.reused)}; outputs: " + ", ".join(str(p) for p in outcome.paths.values()), err=True
        )


def split_for_data(data: Path, split: str | None, models: Iterable[tuple[str, str | None]]) -> str:
    """`split`, or evaluate's default for a --data folder (core.data.loading.resolve_split): its val part
    when one of `models` (name, weights) was trained on it, never its training images; else all."""
    from core.data.loading import resolve_split
    from core.models import weights_path_for
    from core.weights import card_path, read_card

    if split is not None:
        return split
    cards = {}
    for name, weights in models:
        path = Path(weights) if weights else weights_path_for(name)
        card = read_card(path) if card_path(path).is_file() else {}
        cards.setdefault((card.get("data") or {}).get("data_hash"), card)  # one folder listing per training set
    return "val" if any(resolve_split(data, None, card) == "val" for card in cards.values()) else "all"


def _warn_if_reporting_cohort(preset: Preset) -> None:
    """One line on stderr, before any compute, when a sweep reads the cohort where figures are reported
    (the default data): t* and depth are chosen from sweeps, and a choice made on the reported images
    would be reported on the images it was fitted to."""
    from core.attacks.robust import process_state
    from core.data.locations import default_data_for

    (sweep,) = preset.sweeps
    report, shared, _ = reporting_cohort_images(sweep.classifier.name, preset.data)
    if shared and process_state().is_main_process:
        typer.echo(
            f"warning: this sweep reads the reporting cohort {report}, so its curve is a reported figure, not a way to choose; "
            f"choose {sweep.parameter} on --data {default_data_for(sweep.classifier.name)} --split val",
            err=True,
        )


def _checked_store(store: Path | None) -> Path:
    """--store (default: the repository's store, or $PURIFYLAB_RESULTS's), refused before torch is
    imported when it cannot hold a store: opening it found that out 6-33 s later."""
    from core.paths import RESULTS_STORE
    from core.results import check_store_path

    return check_store_path(store or RESULTS_STORE)


def _measured_models(preset: Preset) -> list[tuple[str, str | None]]:
    """(name, weights) of every classifier whose figures the preset reports."""
    models = [(model.name, model.weights) for table in preset.tables for model in table.classifiers]
    models += [(column.classifier, column.classifier_weights) for table in preset.tables for column in table.columns if column.classifier]
    models += [(part.classifier.name, part.classifier.weights) for part in (*preset.sweeps, *preset.detection)]
    return models


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("table")
    def table_command(
        preset: Annotated[str, typer.Argument(help="preset name in configs/ (e.g. quick, paper-table1) or a YAML path")],
        limit: Annotated[int | None, count_option("--limit", "N images evenly spaced through the split")] = None,
        eot: Annotated[
            int | None,
            typer.Option(
                "--eot",
                help="purifier draws per attack step for bpda-eot / white (default: the preset's); fewer is a weaker attack, for a CPU",
                callback=at_least_one("--eot"),
            ),
        ] = None,
        data: Annotated[
            Path | None,
            typer.Option(
                "--data", help="override the preset's data folder; a folder one of its classifiers was trained on is read on its val part, as evaluate does"
            ),
        ] = None,
        only: Annotated[
            str | None, typer.Option("--only", help="comma-separated names of the tables / sweeps / detection runs to compute (default: all)")
        ] = None,
        store: ResultsStore = None,
        out_dir: Annotated[Path | None, typer.Option("--out-dir", help="output folder (default: <results>/<preset>)")] = None,
        overwrite: Overwrite = False,
        threads: Threads = None,
        progress: Progress = True,
        device: Device = None,
    ) -> None:
        """Compute a preset's tables (reusing stored cells) and print them as Markdown."""
        store = _checked_store(store)
        check_run(data, out_dir, "--out-dir", device)
        from core.tables import load_preset, run_preset

        set_threads(threads)
        resolved = load_preset(preset).with_overrides(limit=limit, data=str(data) if data else None, eot=eot, only=only.split(",") if only else None)
        if data is not None and resolved.split == "all":  # the preset's "all" means its own test cohort, not training images
            resolved = dataclasses.replace(resolved, split=split_for_data(data, None, _measured_models(resolved)))
        if data is not None:  # a preset read on its val (defense-selection) must not carve that val out of the cohort
            for name, _ in _measured_models(resolved):
                check_split_not_carved_from_cohort(name, data, resolved.split)
        with resume_hint(f"finished cells are kept in {store}; rerun the same command to resume"):
            outcome = run_preset(resolved, store, out_dir, progress=progress, overwrite=overwrite)
        _print_outcome(outcome)

    @app.command("presets")
    def presets_command(
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    ) -> None:
        """List the table presets in configs/."""
        import json

        from core.tables import list_presets, preset_heading

        rows = [{"name": name, "title": preset_heading(name).title} for name in list_presets()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        width = max((len(row["name"]) for row in rows), default=0) + 2
        for row in rows:
            typer.echo(f"{row['name']:<{width}}{row['title']}")

    @app.command("sweep")
    def sweep_command(
        context: typer.Context,
        kind: Annotated[str, typer.Argument(help="tstar | depth")],
        purifier: Annotated[
            str, typer.Option("--purifier", help="a purifier with a sweep of KIND: 'purifylab purifiers' lists each one's sweeps (tstar, depth)")
        ],
        values: Annotated[str, typer.Option("--values", help="comma-separated values, e.g. 0.01,0.02,0.04")],
        classifier: Annotated[str, typer.Option("--classifier")] = "vit",
        param: Annotated[list[str] | None, typer.Option("--param", help="other purifier parameter k=v (repeatable)")] = None,
        attack: Annotated[str | None, typer.Option("--attack", help="attack name; omit for clean accuracy only")] = None,
        eps: Annotated[float, typer.Option("--eps")] = 0.03,
        norm: Annotated[str, typer.Option("--norm")] = "linf",
        steps: Annotated[int, typer.Option("--steps")] = 10,
        threat: Annotated[str, typer.Option("--threat")] = "grey",
        eot: Annotated[int, typer.Option("--eot", help="purifier draws per attack step (bpda-eot, white)", callback=at_least_one("--eot"))] = 1,
        redraws: Annotated[int, typer.Option("--redraws", help="test-time purifier draws; the worst case is reported", callback=at_least_one("--redraws"))] = 1,
        data: Annotated[Path | None, typer.Option("--data", help="data set (default: the X-ray test cohort)")] = None,
        split: Annotated[str | None, split_option("val | train | all; default: val of the classifier's training folder, else all (as evaluate)")] = None,
        limit: Annotated[int | None, count_option("--limit", "N images evenly spaced through the split")] = None,
        seed: Annotated[int, seed_option("attack, purifier and bootstrap seed")] = 0,
        store: ResultsStore = None,
        out_dir: Annotated[Path | None, typer.Option("--out-dir")] = None,
        overwrite: Overwrite = False,
        threads: Threads = None,
        device: Device = None,
    ) -> None:
        """Accuracy vs t* or depth: CSV, plotly HTML and Markdown through the results store."""
        store = _checked_store(store)
        check_run(data, out_dir, "--out-dir", device)
        from core.sweeps import check_sweep_names

        check_sweep_names(kind, purifier, classifier, threat if attack is not None else None)
        check_eot_has_attack(eot, attack, threat)
        check_attack_options_need_attack(context, attack, ("threat", "eps", "norm", "steps"))  # --redraws: clean cells draw k times too
        if attack is not None:
            check_steps_apply(context, attack)
        if data is not None:
            check_data_layout(data, split)
            check_split_not_carved_from_cohort(classifier, data, split)
        from core.attacks import AttackConfig
        from core.cli.options import parse_param_options
        from core.defense import purifier_spec_text
        from core.sweeps import parse_values, sweep_preset
        from core.tables import AttackRow, run_preset
        from core.tables.preset import DEFAULT_DATA

        set_threads(threads)
        split = split_for_data(data, split, [(classifier, None)]) if data is not None else split or "all"
        fixed = parse_param_options(param or [])
        row = AttackRow(f"{attack} {norm} {eps:g}", AttackConfig(name=attack, norm=norm, eps=eps, steps=steps, seed=seed)) if attack else None
        preset = sweep_preset(
            kind, purifier, parse_values(values), classifier=classifier, params=fixed,
            attack=row, threat=threat, data=str(data) if data else DEFAULT_DATA, split=split, limit=limit, seed=seed,
            eot=eot, redraws=redraws,
        )  # fmt: skip
        if fixed:  # the fixed --param set the curve's scale: a title without them reads as the defaults' curve
            preset = dataclasses.replace(preset, title=f"{preset.title}; {purifier_spec_text(purifier, fixed)}")
        _warn_if_reporting_cohort(preset)
        with resume_hint(f"finished cells are kept in {store}; rerun the same command to resume"):
            outcome = run_preset(preset, store, out_dir, overwrite=overwrite)
        if outcome.markdown:
            typer.echo(f"data {preset.data} split {preset.split}\n")
        _print_outcome(outcome)
