"""Tables, sanity checks and plots from computed cells: Markdown, CSV, JSON and plotly HTML.

Every printed number carries its threat model: in the caption, and in the column header wherever a
table mixes threat models. The gradient-masking checks (collapse, white >= transfer, white <= bpda)
are computed from the same cells and shown both as a FLAG column and as a list under the tables.

The attack and purifier registries and scipy's intervals import torch or scipy (seconds): each is
imported by the function that needs it, so the app's pages import this module to show stored results
without them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.data.locations import portable_path
from core.errors import PurifyLabError
from core.paths import write_files
from core.tables.preset import PaperClaim, Preset, TableSpec
from core.tables.verdict import DECISIVE_WIDTH, Verdict

if TYPE_CHECKING:
    from core.attacks import AttackConfig, SanityCheck

# The metrics of a cell that are measurements of this machine, not results: left out of `results`.
TIMING_KEYS = ("timing",)
# The metrics these outputs print of each kind of cell; a stored cell without one is refused by name
# before any compute (core.tables.runner), not met as a KeyError once every cell is done.
PRINTED_METRICS = {
    "robust": ("n", "one_shot_accuracy", "worst_case_accuracy", "redraws", "balanced_accuracy", "auroc", "confidence_95", "nfe", "timing", "budget"),
    "collapse": ("accuracy_by_eps",),
    "detection": ("n", "purified_robust_accuracy", "reconstruction", "sevit"),
}
CSV_FIELDS = (
    "table", "classifier", "row", "column", "threat", "one_shot_accuracy", "worst_case_accuracy", "redraws",
    "balanced_accuracy", "auroc", "accuracy_ci_low", "accuracy_ci_high", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high",
    "n", "split", "data_hash", "nfe", "gradient_evaluations", "seconds_per_image", "peak_gpu_memory", "flags", "key",
)  # fmt: skip


_BALANCED_INTERVAL = "Bonferroni mean of per-class Clopper-Pearson bounds"
_METRIC_TITLES = {
    "accuracy": "Robust accuracy (%)",
    "balanced_accuracy": f"Robust balanced accuracy (%) [95 % interval: {_BALANCED_INTERVAL}]",
}
# What a paper's figure is judged against, worded from the table's metric: a balanced-accuracy cell's
# interval is conservative, not exact, and a reader must see the figure is read as balanced accuracy.
_VERDICT_INTERVALS = {
    "accuracy": "the cell's exact 95 % interval",
    "balanced_accuracy": f"the cell's balanced accuracy and its 95 % interval, the {_BALANCED_INTERVAL}, conservative rather than exact",
}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _accuracy_text(metrics: dict, show_time: bool, metric: str = "accuracy") -> str:
    if metric == "balanced_accuracy":
        low, high = metrics["confidence_95"]["balanced_accuracy"]
        text = f"{_percent(metrics['balanced_accuracy'])} [{_percent(low)}, {_percent(high)}]"
        worst = metrics.get("worst_case_balanced_accuracy")
        if metrics.get("redraws", 1) > 1 and worst is not None:
            text += f" / {_percent(worst)}"
    else:
        text = _percent(metrics["one_shot_accuracy"])
        if metrics.get("redraws", 1) > 1:
            text += f" / {_percent(metrics['worst_case_accuracy'])}"
    if show_time:
        text += f" ({_time_text(metrics['timing'])}; NFE {metrics['nfe']})"
    return text


def _time_text(timing: dict) -> str:
    """Purification alone per image, batched and (when measured) one at a time; the attack apart.
    Cells stored before the split carry only the whole cell's time, and say so."""
    if "purify_seconds_per_image" not in timing:
        return f"{timing['seconds_per_image']:.3f} s/img attack + purification"
    text = f"purify {timing['purify_seconds_per_image']:.3f} s/img at batch {timing['purify_batch']}"
    if "purify_seconds_per_image_batch1" in timing:
        text += f", {timing['purify_seconds_per_image_batch1']:.3f} at batch 1"
    if timing["attack_seconds_per_image"]:
        text += f"; attack {timing['attack_seconds_per_image']:.3f} s/img"
    return text


def _cells_of(records: Sequence[dict], table: str) -> list[dict]:
    return [r for r in records if r.get("table") == table]


def _cell_at(records: Sequence[dict], classifier: str, column: str, threat: str, row: str) -> dict | None:
    """The table cell printed at (classifier, column, threat, row), or None if it was not computed."""
    place = (classifier, column, threat, row)
    return next((r for r in records if (r["classifier"], r["column"], r["threat"], r["row"]) == place), None)


def _checked_metric(table: TableSpec) -> str:
    """The one-shot metric a table prints, which its checks compare, so a check reads against its cells."""
    return "balanced_accuracy" if table.metric == "balanced_accuracy" else "one_shot_accuracy"


def _within_one_image(tolerance: float, n: int) -> float:
    """The gap two cells on n images may show before a check flags it: the tolerance, or one image."""
    return max(tolerance, 1.0 / n)


def masking_checks(records: Sequence[dict], table: TableSpec, tolerance: float) -> list[tuple[dict, SanityCheck]]:
    """Every attacker with more access against each with less (`ThreatModel.not_weaker_than`), for
    every (classifier, column, attack row) that has both, in the table's metric; a balanced-accuracy
    table's checks name it, since the undefended-collapse check beside them is plain accuracy. An
    inversion is allowed up to the tolerance or one image (1/n), as in `convergence_checks`: at n = 16
    one image of one draw is 6 points, sampling noise, not masking."""
    from core.attacks import check_not_weaker, threat_model

    by_place = {(r["classifier"], r["column"], r["row"], r["threat"]): r for r in _cells_of(records, table.name)}
    metric = _checked_metric(table)
    named = {"metric": "balanced accuracy (one-shot)"} if metric == "balanced_accuracy" else {}
    checks = []
    for (classifier, column, row, threat), record in by_place.items():
        if record["config"]["attack"] is None:
            continue
        for weaker in threat_model(threat).not_weaker_than:
            other = by_place.get((classifier, column, row, weaker))
            if other is None:
                continue
            allowed = _within_one_image(tolerance, min(record["metrics"]["n"], other["metrics"]["n"]))
            check = check_not_weaker(threat, record["metrics"][metric], weaker, other["metrics"][metric], allowed)
            checks.append(({"table": table.name, "classifier": classifier, "column": column, "row": row, **named}, check))
    return checks


def _series_key(attack: AttackConfig, varied: str) -> tuple:
    """Every setting of the attack but `varied`, so a convergence series varies that one thing only (rows
    apart in restarts or alpha too were paired, or blamed on steps or EOT). alpha as written: its default,
    2.5 * eps / steps, follows the steps, which is what a steps series varies."""
    settings = {**attack.resolved(), "alpha": attack.alpha}
    settings.pop(varied)
    return tuple(sorted(settings.items()))


def convergence_checks(records: Sequence[dict], table: TableSpec, tolerance: float) -> list[tuple[dict, SanityCheck]]:
    """In a `convergence` table, rows of one attack that differ in steps alone form a series over steps,
    and rows that differ in eot_iter alone one over EOT draws; the two largest budgets of each series must
    agree within the tolerance or 1/n, whichever is larger (in balanced accuracy one image of the smaller
    class moves more than 1/n, so the check is the stricter for it). Checked on the attack's own metric."""
    from core.attacks import SanityCheck
    from core.attacks.sanity import exceeds_tolerance

    if not table.convergence:
        return []
    rows = [row for row in table.rows if row.attack is not None]
    checks = []
    for varied in ("steps", "eot_iter"):
        series: dict[tuple, list] = {}
        for row in rows:
            series.setdefault(_series_key(row.attack, varied), []).append(row)
        for members in series.values():
            if len(members) < 2:
                continue
            second, last = sorted(members, key=lambda r: getattr(r.attack, varied))[-2:]
            for record in _cells_of(records, table.name):
                if record["row"] != last.label:
                    continue
                other = next(
                    (
                        r
                        for r in _cells_of(records, table.name)
                        if r["row"] == second.label
                        and (r["classifier"], r["column"], r["threat"]) == (record["classifier"], record["column"], record["threat"])
                    ),
                    None,
                )
                if other is None:
                    continue
                metric = _checked_metric(table)
                more, fewer = record["metrics"][metric], other["metrics"][metric]
                allowed = _within_one_image(tolerance, record["metrics"]["n"])
                what = "EOT draws" if varied == "eot_iter" else "steps"
                flag = None
                if exceeds_tolerance(abs(more - fewer), allowed):
                    flag = f"{last.label} leaves {more:.3f} but {second.label} {fewer:.3f}: the attack has not converged in {what}; add more"
                values = {"more_budget": more, "less_budget": fewer, "tolerance": allowed}
                where = {"table": table.name, "classifier": record["classifier"], "column": record["column"], "row": last.label}
                checks.append((where, SanityCheck(f"{record['threat']} attack converged in {what}", values, flag)))
    return checks


def _minimal_rows(table: TableSpec) -> list:
    """The rows of attacks without a budget (DeepFool, CW, EAD)."""
    return [row for row in table.rows if row.attack is not None and not row.attack.bounded]


def minimal_attack_checks(records: Sequence[dict], table: TableSpec) -> list[tuple[dict, SanityCheck]]:
    """Every minimal-perturbation attack row must take each undefended column below 10 %."""
    from core.attacks import check_minimal_attack_converged

    undefended = {column.label for column in table.columns if column.undefended}
    rows = {row.label for row in _minimal_rows(table)}
    checks = []
    for record in _cells_of(records, table.name):
        if record["row"] in rows and record["column"] in undefended:
            where = {"table": table.name, "classifier": record["classifier"], "column": record["column"], "row": record["row"]}
            checks.append((where, check_minimal_attack_converged(record["row"], record["metrics"]["one_shot_accuracy"])))
    return checks


def perturbation_lines(records: Sequence[dict], table: TableSpec, classifier: str) -> list[str]:
    """Under a table with minimal-perturbation rows: how large each attack's changes were and how often
    it fooled the classifier alone, per row; columns that share the same adversarial images share a line."""
    from core.attacks.config import perturbation_text

    lines = []
    for row in _minimal_rows(table):
        summaries: dict[str, list[str]] = {}
        for record in _cells_of(records, table.name):
            if (record["classifier"], record["row"]) != (classifier, row.label):
                continue
            text = perturbation_text(record["metrics"]["perturbation"])  # always there: these cells carry reports: [perturbation]
            summaries.setdefault(text, []).append(f"{record['column']} [{record['threat']}]")
        lines += [f"- {row.label} against {', '.join(places)}: {text}" for text, places in summaries.items()]
    if not lines:
        return []
    header = (
        "Minimal-perturbation attacks, before any purifier (success = share of the images the classifier "
        "read correctly that it misreads after the attack; norms over the images it fooled, on the [0, 1] pixel scale):"
    )
    return [header, "", *lines, ""]


def collapse_checks(records: Sequence[dict]) -> list[tuple[dict, SanityCheck]]:
    from core.attacks import check_accuracy_collapse

    checks = []
    for record in records:
        if "collapse" in record:
            accuracy = {float(eps): value for eps, value in record["metrics"]["accuracy_by_eps"].items()}
            checks.append(({"classifier": record["collapse"]}, check_accuracy_collapse(accuracy)))
    return checks


def _row_flags(checks: list[tuple[dict, SanityCheck]], table: str, classifier: str, row: str) -> str:
    """The failed checks of one table row, as printed in its FLAG column: the masking checks of its
    cells, and a failed collapse check of its classifier (the attack itself did not work on the
    undefended model, which voids every robust number of that classifier)."""
    failed = [
        f"FLAG: fails '{c.name}' ({where['column']})" if "table" in where else f"FLAG: fails '{c.name}' (undefended {classifier})"
        for where, c in checks
        if not c.passed and where.get("classifier") == classifier and (where.get("table"), where.get("row")) in ((table, row), (None, None))
    ]  # fmt: skip
    return "; ".join(failed)


def _is_training_threat(row, trained_on: str | None) -> bool:
    """True when the row's norm matches and its eps is within 5 % of the 'norm:eps' a model was trained on
    (L-inf 0.03 and 8/255 = 0.0314 are the same threat model)."""
    if not trained_on:
        return False
    norm, _, eps = trained_on.partition(":")
    return row.attack.norm == norm and abs(row.attack.eps - float(eps)) <= 0.05 * float(eps)


def _averages(records: list[dict], table: TableSpec, classifier: str, column, threat: str) -> tuple[float | None, float | None]:
    """(AwT, AoA): mean of the table's metric over attack rows, without / with the column's training threat."""
    values, unseen = [], []
    for row in table.rows:
        if row.name is None:
            continue
        cell = _cell_at(records, classifier, column.label, threat, row.label)
        if cell is None:
            continue
        accuracy = _value_and_interval(cell["metrics"], table.metric == "balanced_accuracy")[0]
        values.append(accuracy)
        if not _is_training_threat(row, column.trained_on):
            unseen.append(accuracy)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return mean(unseen), mean(values)


def _budget_text(row) -> str:
    from core.attacks import ATTACKS

    attack = row.attack
    spec = ATTACKS.get(attack.name)
    eps = f" eps {attack.eps:g}" if spec.bounded else " (minimal perturbation)"
    if spec.schedule:  # AutoAttack runs its own schedule, whatever `steps` says
        steps = f", {spec.schedule}"
    else:
        steps = "" if spec.single_step else f", {attack.steps} {'queries' if attack.name == 'square' else 'steps'}"
    return f"{row.label} = {attack.name} {attack.norm}{eps}{steps}"


def _eot_draws(records: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """(threat EOT, eot_iter) of each attacked row, as its cells ran: the threat's draws per step as the
    cell's budget counted them (attack_budget), and the attack's own draws, which multiply them. Over
    the cells of an EOT threat model with a stochastic purifier: a deterministic one is drawn once."""
    from core.attacks import threat_model
    from core.purifiers import PURIFIERS

    draws = {}
    for record in records:
        config = record["config"]
        if config["attack"] is None or not threat_model(config["threat"]).uses_eot or not PURIFIERS.get(config["purifier"]["name"]).stochastic:
            continue
        draws[record["row"]] = (record["metrics"]["budget"]["threat_eot"], config["attack"]["eot_iter"])
    return draws


def _draws_per_step(draws: dict[str, tuple[int, int]]) -> set[int]:
    """Purifier draws per attack step over the rows; {1} where no cell draws a stochastic purifier under EOT."""
    return {threat_eot * eot_iter for threat_eot, eot_iter in draws.values()} or {1}


def _span(values: set[int]) -> str:
    return f"{min(values)}" if len(values) == 1 else f"{min(values)}-{max(values)}"


def _describe(threat: str, draws: dict[str, tuple[int, int]]) -> str:
    """The threat model in words with the draws its attacker took per step ('several' where rows differ)."""
    from core.attacks import threat_model

    counts = _draws_per_step(draws)
    return threat_model(threat).describe(counts.pop() if len(counts) == 1 else None)


def _eot_text(draws: dict[str, tuple[int, int]]) -> str:
    """The purifier draws per attack step behind a table's EOT threat models: the preset's EOT times each
    row's eot_iter, spelled out row by row where rows differ."""
    counts = _draws_per_step(draws)
    if len(counts) == 1:
        count = counts.pop()
        return f" {count} purifier draw{'' if count == 1 else 's'} per attack step"
    threat_eots = {threat_eot for threat_eot, _ in draws.values()}
    if threat_eots == {1}:
        return " per row: each row's attack draws its own (eot_iter, in the row's label)"
    per_row = ", ".join(f"{row}: {threat_eot * eot_iter}" for row, (threat_eot, eot_iter) in draws.items())
    return f" per row: preset EOT {_span(threat_eots)} x the row's eot_iter purifier draws per attack step ({per_row})"


def table_caption(preset: Preset, table: TableSpec, records: list[dict]) -> str:
    from core.attacks import threat_model
    from core.purifiers import PURIFIERS

    draws = _eot_draws(records)
    threats = "; ".join(f"{t}: {_describe(t, draws)}" for t in table.threats)
    n = records[0]["metrics"]["n"] if records else 0
    budgets = ", ".join(_budget_text(row) for row in table.rows if row.name is not None)
    eot = ""
    if any(threat_model(t).uses_eot for t in table.threats):
        drawn_once = [c.label for c in table.columns if c.purifier != "none" and not PURIFIERS.get(c.purifier).stochastic]
        eot = f"; EOT{_eot_text(draws)}" + (f" ({', '.join(drawn_once)}: deterministic, drawn once)" if drawn_once else "")
    stochastic = any(r["metrics"].get("redraws", 1) > 1 for r in records)
    redraws = f"; cells 'a / b' = one-shot / worst of {preset.redraws} purifier draws" if stochastic else ""
    data = "/".join(Path(preset.data).parts[-2:])
    intervals = f" {_interval_text(n, stochastic)}" if table.metric == "accuracy" and n else ""
    return (
        f"{table.caption} {_METRIC_TITLES[table.metric]} on {n} images of split '{preset.split}' of {data}, "
        f"seed {preset.seed}. Threat model - {threats}. Attacks: {budgets or 'none'}{eot}{redraws}.{intervals}"
    )


def _interval_text(n: int, stochastic: bool) -> str:
    """Where an accuracy table's intervals are, and how wide they get at its n: cells print bare
    percentages, and at n = 32 a difference of 20 points is noise. The widest exact interval is the one
    at half the images right. Only the one-shot figure's is there: 'b' of an 'a / b' cell has none in the CSV."""
    from core.metrics import clopper_pearson

    low, high = clopper_pearson(n // 2, n)
    of_what = "each cell's one-shot figure a" if stochastic else "each cell"
    return (
        f"The CSV and the JSON (confidence_95) hold the 95 % interval of {of_what}: "
        f"exact Clopper-Pearson for accuracy (accuracy_ci_low, accuracy_ci_high), the {_BALANCED_INTERVAL} for balanced accuracy "
        "(balanced_accuracy_ci_low, balanced_accuracy_ci_high); "
        f"at n = {n} the widest exact one, at {n // 2} of {n} right, spans {100 * (high - low):.1f} points ({_percent(low)} to {_percent(high)})."
    )


def _column_header(table: TableSpec, column, threat: str) -> str:
    """A column's header in a table that mixes threat models. With no purifier in front of the classifier
    the grey attacker already has every gradient, so a grey-only column says so rather than look untested."""
    if column.purifier == "none" and threat == "grey" and "white" in table.threats and "white" not in (column.threats or table.threats):
        return f"{column.label} [white = grey: no purifier]"
    return f"{column.label} [{threat}]"


def markdown_tables(preset: Preset, records: list[dict], checks: list[tuple[dict, SanityCheck]]) -> str:
    parts = [f"# {preset.title}", ""]
    if preset.notes:
        parts += [preset.notes.strip(), ""]
    for table in preset.tables:
        table_records = _cells_of(records, table.name)
        table_checks = [(w, c) for w, c in checks if w.get("table") in (table.name, None)]
        parts += [f"## {table.name}", "", table_caption(preset, table, table_records), ""]
        several_threats = len(table.threats) > 1
        for model in table.classifiers:
            header_cells = [_column_header(table, column, threat) if several_threats else column.label for column, threat in table.placements()]
            # a column wherever this table checks the classifier's cells, or its collapse check failed
            has_flags = any(w.get("classifier") == model.title and ("table" in w or not c.passed) for w, c in table_checks)
            header = ["Attack", *header_cells] + (["FLAG"] if has_flags else [])
            parts += [f"**{model.title}**" + ("" if several_threats else f" ({table.threats[0]})"), ""]
            parts += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for row in table.rows:
                values = []
                for column, threat in table.placements():
                    cell = _cell_at(table_records, model.title, column.label, threat, row.label)
                    values.append(_accuracy_text(cell["metrics"], table.show_time, table.metric) if cell else "n/a")
                flags = [_row_flags(table_checks, table.name, model.title, row.label) or "ok"] if has_flags else []
                parts.append("| " + " | ".join([row.label, *values, *flags]) + " |")
            if table.averages:
                for index, name in ((0, "AwT"), (1, "AoA")):
                    values = [_percent(_averages(table_records, table, model.title, column, threat)[index]) for column, threat in table.placements()]
                    parts.append("| " + " | ".join([name, *values, *([""] if has_flags else [])]) + " |")
            parts.append("")
            parts += perturbation_lines(table_records, table, model.title)
        parts += verdict_lines(table, table_records, table_checks)
    return "\n".join(parts)


def verdicts(table: TableSpec, records: list[dict]) -> list[tuple[PaperClaim, Verdict | None]]:
    """Each of the table's paper claims with the verdict of its cell (None: the cell was not computed)."""
    judged = []
    for claim in table.claims:
        cell = _cell_at(records, *claim.place(table))
        if cell is None:
            judged.append((claim, None))
            continue
        ours, (low, high) = _value_and_interval(cell["metrics"], table.metric == "balanced_accuracy")
        judged.append((claim, Verdict(claim.value / 100.0, ours, low, high)))
    return judged


def verdict_lines(table: TableSpec, records: list[dict], checks: list[tuple[dict, SanityCheck]]) -> list[str]:
    """The verdict list; a claim on a FLAGged row says so, since the flag voids what the row shows."""
    judged = verdicts(table, records)
    if not judged:
        return []
    lines = [
        f"Against the paper's figures ({_VERDICT_INTERVALS[table.metric]}; a figure inside it confirms only if the interval spans at most "
        f"{100 * DECISIVE_WIDTH:.0f} points, one outside it is refuted):",
        "",
        "| Attack | Column | Paper | Ours [95 % interval] | Verdict |",
        "|---|---|---|---|---|",
    ]
    for claim, verdict in judged:
        ours = "not computed" if verdict is None else f"{_percent(verdict.ours)} [{_percent(verdict.low)}, {_percent(verdict.high)}]"
        word = "cannot decide (cell not computed)" if verdict is None else verdict.word
        classifier, _, threat, _ = claim.place(table)
        if _row_flags(checks, table.name, classifier, claim.row):
            word += "; the row is FLAGged"
        column = f"{claim.column} [{threat}]" if len(table.threats) > 1 else claim.column
        if len(table.classifiers) > 1:
            column = f"{classifier}: {column}"
        lines.append(f"| {claim.row} | {column} | {claim.value:.2f} | {ours} | {word} |")
    return lines + [""]


def sanity_markdown(checks: list[tuple[dict, SanityCheck]]) -> str:
    lines = ["## Sanity checks (gradient masking)", ""]
    if not checks:
        return "\n".join(lines + ["No check applies (no collapse run and no white/transfer/bpda pairs).", ""])
    for where, check in checks:
        place = ", ".join(f"{k} {v}" for k, v in where.items())
        values = ", ".join(f"{k} {v:.3f}" for k, v in check.values.items())
        status = "pass" if check.passed else f"FLAG: {check.flag}"
        lines.append(f"- {check.name} ({place}): {values} -> {status}")
    masking_pairs = any(w.get("table") for w, _ in checks)
    if not masking_pairs:
        lines.append("- white >= transfer and white <= bpda: not applicable (no table here pairs those threat models)")
    return "\n".join(lines + [""])


def sweep_markdown(preset: Preset, records: list[dict]) -> str:
    sweeps = sorted({r["sweep"] for r in records if "sweep" in r})
    parts = []
    for name in sweeps:
        rows = [r for r in records if r.get("sweep") == name]
        parameter, threat = rows[0]["parameter"], rows[0]["threat"]
        labels = list(dict.fromkeys(r["row"] for r in rows))
        heading = f"## Sweep {name}: accuracy (%) vs {parameter}"
        attacker = _sweep_attacker(rows)
        if attacker is not None:
            heading += f" (attacked rows under threat '{threat}': {attacker})"
        data = "/".join(Path(preset.data).parts[-2:])
        attacks = ", ".join(dict.fromkeys(f"{r['row']} = {_attack_text(r['config']['attack'])}" for r in rows if r["config"]["attack"]))
        parts += [heading, ""]
        parts += [
            f"On {rows[0]['metrics']['n']} images of split '{preset.split}' of {data}, seed {preset.seed}; 95 % intervals in the CSV and JSON."
            + (f" Attacks: {attacks}." if attacks else ""),
            "",
        ]
        parts += ["| " + " | ".join([parameter, *labels]) + " |", "|" + "---|" * (len(labels) + 1)]
        cells = {(r["value"], r["row"]): r for r in rows}
        for value in sorted(dict.fromkeys(r["value"] for r in rows)):  # one cell per header, so none lands beyond the last
            values = [_accuracy_text(cells[value, label]["metrics"], False) if (value, label) in cells else "n/a" for label in labels]
            parts.append("| " + " | ".join([_sweep_value_text(value), *values]) + " |")
        parts.append("")
    return "\n".join(parts)


def _sweep_attacker(rows: list[dict]) -> str | None:
    """The attacker of a sweep's attacked rows in words, with the purifier draws it took per step, for
    the Markdown heading and the figure alike; None for a clean-only sweep, which has no attacker."""
    from core.attacks import threat_model
    from core.purifiers import PURIFIERS

    if all(r["config"]["attack"] is None for r in rows):
        return None
    threat, purifier = rows[0]["threat"], rows[0]["config"]["purifier"]["name"]
    attacker = _describe(threat, _eot_draws(rows))
    if threat_model(threat).uses_eot and not PURIFIERS.get(purifier).stochastic:
        attacker += f" ({purifier}: deterministic, drawn once)"
    return attacker


def _sweep_value_text(value: float) -> str:
    """A swept value as short as it reads ('0.1', '2'), but never two values under one label: where the
    short form is not the value itself (0.1000001 is not 0.1), the exact shortest form."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


# The detector-aware row's attacker, which no registered threat model describes: it sees more than grey.
DETECTOR_AWARE = "adaptive (sees the reconstruction error)"


def _detector_aware(record: dict) -> bool:
    return record["config"]["adaptive_weight"] > 0


def _detection_threat(record: dict) -> str:
    """What a detection row's attacker sees: grey (the classifier only), or the detector-aware PGD's
    more, since it differentiates against DiffDefense's reconstruction error at every step."""
    return DETECTOR_AWARE if _detector_aware(record) else "grey"


def detection_markdown(preset: Preset, records: list[dict]) -> str:
    """One section per detection run, each with its images, split and every row's attacker and budget."""
    from core.attacks import threat_model

    parts = []
    data = "/".join(Path(preset.data).parts[-2:])
    for spec in preset.detection:
        rows = [r for r in records if r.get("detection") == spec.name]
        if not rows:
            continue
        threats = []
        if spec.attacks:
            threats.append(f"grey ({', '.join(row.label for row in spec.attacks)}): {threat_model('grey').describe()}")
        if spec.adaptive_label:
            threats.append(
                f"{spec.adaptive_label}: an adaptive attacker that at every step also sees the purifier's "
                f"reconstruction error and subtracts {spec.adaptive_weight:g} x it from its cross-entropy loss (the reconstruction "
                "held constant in the gradient), so its robust accuracy is not a grey-box figure"
            )
        budgets = ", ".join(_budget_text(row) for row in spec.attacks)  # the adaptive row's label holds its own
        parts += [f"## Attack detection {spec.name} (AUROC, attacked = positive)", ""]
        parts += [
            f"On {rows[0]['metrics']['n']} images of split '{rows[0]['config']['data']['split']}' of {data}, seed {preset.seed}; the clean "
            f"images are every row's negatives. Threat model - {'; '.join(threats)}." + (f" Attacks: {budgets}." if budgets else ""),
            "",
        ]
        parts += ["| Attack | DiffDefense reconstruction error | SEViT consistency | robust acc. after DiffDefense (%) |", "|---|---|---|---|"]
        for r in rows:
            m = r["metrics"]
            sevit = f"{m['sevit']['auroc']:.3f}" if m.get("sevit") else "n/a"
            parts.append(f"| {r['row']} | {m['reconstruction']['auroc']:.3f} | {sevit} | {_percent(m['purified_robust_accuracy'])} |")
        parts.append("")
    return "\n".join(parts)


def _detection_csv_rows(record: dict) -> list[dict]:
    """A detection record as CSV rows, one per detector scored: `auroc` is that detector's (attacked =
    positive) and one_shot_accuracy the classifier's after DiffDefense on the attacked images."""
    m = record["metrics"]
    return [
        {
            "table": f"detection:{record['detection']}",
            "classifier": record["config"]["classifier"]["name"],
            "row": record["row"],
            "column": f"detector={detector}",
            "threat": _detection_threat(record),
            "one_shot_accuracy": m["purified_robust_accuracy"],
            "auroc": m[detector]["auroc"],
            "n": m["n"],
            "split": record["config"]["data"]["split"],
            "data_hash": record["config"]["data"]["hash"],
            "key": record["key"],
        }
        for detector in ("reconstruction", "sevit")
        if m.get(detector)
    ]


def csv_text(records: list[dict], checks: list[tuple[dict, SanityCheck]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        if "detection" in r:
            writer.writerows(_detection_csv_rows(r))
        if "table" not in r and "sweep" not in r:
            continue
        m = r["metrics"]
        budget = m.get("budget") or {}
        writer.writerow({
            "table": r.get("table") or f"sweep:{r['sweep']}",
            "classifier": r.get("classifier") or r["config"]["classifier"]["name"],
            "row": r["row"],
            "column": r.get("column") or f"{r['parameter']}={r['value']}",
            "threat": r["threat"],
            "one_shot_accuracy": m["one_shot_accuracy"],
            "worst_case_accuracy": m["worst_case_accuracy"],
            "redraws": m["redraws"],
            "balanced_accuracy": m["balanced_accuracy"],
            "auroc": m["auroc"],
            "accuracy_ci_low": m["confidence_95"].get("accuracy", [None, None])[0],
            "accuracy_ci_high": m["confidence_95"].get("accuracy", [None, None])[1],
            "balanced_accuracy_ci_low": m["confidence_95"].get("balanced_accuracy", [None, None])[0],
            "balanced_accuracy_ci_high": m["confidence_95"].get("balanced_accuracy", [None, None])[1],
            "n": m["n"],
            "split": r["config"]["data"]["split"],
            "data_hash": r["config"]["data"]["hash"],
            "nfe": m["nfe"],
            "gradient_evaluations": budget.get("gradient_evaluations"),
            "seconds_per_image": m["timing"]["seconds_per_image"],
            "peak_gpu_memory": m["timing"]["peak_gpu_memory"],
            "flags": _row_flags(checks, r["table"], r["classifier"], r["row"]) if "table" in r else "",
            "key": r["key"],
        })  # fmt: skip
    return buffer.getvalue()


def json_document(preset: Preset, records: list[dict], checks: list[tuple[dict, SanityCheck]]) -> dict[str, Any]:
    """Results (deterministic for a seed) apart from `measurements` (timings of this machine)."""
    from core.attacks import threat_descriptions

    results, measurements = [], {}
    for r in records:
        metrics = {k: v for k, v in r["metrics"].items() if k not in TIMING_KEYS}
        results.append({**{k: v for k, v in r.items() if k != "metrics"}, "metrics": metrics})
        if "timing" in r["metrics"]:
            measurements[r["key"]] = r["metrics"]["timing"]
    return {
        "preset": preset.name,
        "title": preset.title,
        "threat_models": threat_descriptions(),
        "results": results,
        "sanity_checks": [{**where, **check.to_dict(), "passed": check.passed} for where, check in checks],
        "verdicts": [
            {
                "table": table.name,
                **dataclasses.asdict(claim),
                "ours": verdict and verdict.ours,
                "interval": verdict and [verdict.low, verdict.high],
                "verdict": verdict.word if verdict else "not computed",
            }
            for table in preset.tables
            for claim, verdict in verdicts(table, _cells_of(records, table.name))
        ],
        "measurements": measurements,
    }


def figure(preset: Preset, records: list[dict]):
    """Grouped bars per table and classifier, lines per sweep, ROC curves per detection run."""
    import plotly.graph_objects as go

    from core.attacks import threat_model

    panels: list[Panel] = []
    for table in preset.tables:
        table_records = _cells_of(records, table.name)
        balanced = table.metric == "balanced_accuracy"
        for model in table.classifiers:
            traces = []
            for column, threat in table.placements():
                rows = [r for r in table_records if (r["classifier"], r["column"], r["threat"]) == (model.title, column.label, threat)]
                name = f"{column.label} [{threat}]"
                values, intervals = zip(*[_value_and_interval(r["metrics"], balanced) for r in rows], strict=True) if rows else ((), ())
                error = {"type": "data", "symmetric": False, "array": [100 * (high - value) for value, (_, high) in zip(values, intervals, strict=True)],
                         "arrayminus": [100 * (value - low) for value, (low, _) in zip(values, intervals, strict=True)]}  # fmt: skip
                traces.append(go.Bar(name=name, x=[r["row"] for r in rows], y=[100 * value for value in values], error_y=error, legendgroup=name))
            model_records = [r for r in table_records if r["classifier"] == model.title]
            metric = ("balanced accuracy" if balanced else "accuracy") + " (%), bars: 95 % interval"
            eot = ""
            if any(threat_model(threat).uses_eot for threat in table.threats):
                draws = _eot_draws(model_records)
                counts, threat_eots = _draws_per_step(draws), {threat_eot for threat_eot, _ in draws.values()}
                eot = f", EOT {_span(counts)}" + ("" if len(counts) == 1 else f" per step: preset EOT {_span(threat_eots)} x each row's eot_iter")
            attacker = f"threat model in brackets ({', '.join(table.threats)}{eot})"
            subtitle = _run_subtitle(model_records, attacker, metric, preset.data) if model_records else ""
            panels.append(Panel(f"{table.name}: {model.title}", traces, "attack", metric.split(",")[0], subtitle))
    return _assemble(preset.title, panels + _sweep_and_detection_panels(records, preset.data))


def _value_and_interval(metrics: dict, balanced: bool) -> tuple[float, tuple[float, float]]:
    """The number a cell's table shows and its 95 % interval; for accuracy exact, from the count (cells
    stored before accuracy had a Clopper-Pearson interval carry a bootstrap one)."""
    from core.metrics import clopper_pearson

    if balanced:
        return metrics["balanced_accuracy"], tuple(metrics["confidence_95"]["balanced_accuracy"])
    accuracy = metrics["one_shot_accuracy"]
    return accuracy, clopper_pearson(round(accuracy * metrics["n"]), metrics["n"])


# A sweep's parameter as an axis title a reader understands.
PARAMETER_TITLES = {"t_star": "t* (noise level, fraction of T)", "depth": "blur depth (cold-diffusion level)", "t_start": "t_start (fraction of T)"}


@dataclass(frozen=True)
class Panel:
    title: str
    traces: list
    x_title: str
    y_title: str
    subtitle: str = ""


def _attack_text(attack: dict) -> str:
    """A stored attack config as a reader names it: 'PGD-10 L-inf 0.03', 'FGSM L-inf 0.3', 'DeepFool L2'."""
    from core.attacks import ATTACKS

    spec = ATTACKS.get(attack["name"])
    steps = "" if spec.single_step else f"-{attack['steps']}"
    eps = f" {attack['eps']:g}" if spec.bounded else ""
    eot = f", EOT {attack['eot_iter']}" if attack.get("eot_iter", 1) > 1 else ""
    return f"{attack['name'].upper()}{steps} {attack['norm'].replace('linf', 'L-inf').replace('l2', 'L2')}{eps}{eot}"


def _run_subtitle(rows: list[dict], attacker: str, metric: str, data: str | None) -> str:
    """What a chart measured, from its records: the attacker, on how many images of which split, in which metric."""
    split = rows[0]["config"]["data"]["split"]
    where = f" of {'/'.join(Path(data).parts[-2:])}" if data else ""
    return f"{attacker} · {rows[0]['metrics']['n']} images, split '{split}'{where} · {metric}"


def _sweep_and_detection_panels(records: list[dict], data: str | None = None) -> list[Panel]:
    """One panel per sweep and per detection run, each titled by what it varies and subtitled by its record."""
    import plotly.graph_objects as go

    panels: list[Panel] = []
    for name in dict.fromkeys(r["sweep"] for r in records if "sweep" in r):
        rows = [r for r in records if r.get("sweep") == name]
        traces = []
        for label in dict.fromkeys(r["row"] for r in rows):
            points = sorted((r for r in rows if r["row"] == label), key=lambda r: r["value"])  # a line joins neighbours, not --values order
            values = [r["metrics"]["one_shot_accuracy"] for r in points]
            lows, highs = zip(*(r["metrics"]["confidence_95"]["accuracy"] for r in points), strict=True)  # the interval the CSV prints
            error = {"type": "data", "symmetric": False, "array": [100 * (high - value) for value, high in zip(values, highs, strict=True)],
                     "arrayminus": [100 * (value - low) for value, low in zip(values, lows, strict=True)]}  # fmt: skip
            traces.append(go.Scatter(name=label, x=[r["value"] for r in points], y=[100 * value for value in values], error_y=error, mode="lines+markers"))
        parameter, config = rows[0]["parameter"], rows[0]["config"]
        axis = PARAMETER_TITLES.get(parameter, parameter)
        title = f"accuracy vs {axis.split(' (')[0]}: {config['purifier']['name']} in front of {config['classifier']['name']}"
        attacker = _sweep_attacker(rows)
        attacks = ", ".join(dict.fromkeys(_attack_text(r["config"]["attack"]) for r in rows if r["config"]["attack"]))
        threat = "clean, no attack" if attacker is None else f"threat {rows[0]['threat']}: {attacks}"
        redraws = max(r["metrics"]["redraws"] for r in rows)
        metric = "one-shot accuracy (%)" if redraws > 1 else "accuracy (%)"
        drawn = f": the first of {redraws} test-time purifier draws (the worst over them in the table)" if redraws > 1 else ""
        subtitle = _run_subtitle(rows, threat, f"{metric}{drawn}, not balanced, bars: 95 % interval", data) + ("" if attacker is None else f" · {attacker}")
        panels.append(Panel(title, traces, axis, metric, subtitle))
    for name in dict.fromkeys(r["detection"] for r in records if "detection" in r):
        rows = [r for r in records if r.get("detection") == name]
        traces = []
        for r in rows:
            for detector in ("reconstruction", "sevit"):
                result = r["metrics"].get(detector)
                if result:
                    traces.append(
                        go.Scatter(
                            name=f"{r['row']}, {detector} score (AUC {result['auroc']:.2f})", x=result["roc"]["fpr"], y=result["roc"]["tpr"], mode="lines"
                        )
                    )
        aware, grey = any(_detector_aware(r) for r in rows), not all(_detector_aware(r) for r in rows)
        seeing = "an adaptive attacker that sees the reconstruction error"
        attackers = "threat grey" if not aware else seeing if not grey else f"threat grey but the adaptive line, {seeing}"
        subtitle = _run_subtitle(rows, f"{attackers}: one attack per line", "ROC, attacked = positive", data)
        axes = ("false positive rate (clean images flagged)", "true positive rate (attacks caught)")
        panels.append(Panel("attack detection: ROC of each detector's score", traces, *axes, subtitle))
    return panels


def _assemble(title: str, panels: list[Panel]):
    """Panels stacked in one figure, each with its subtitle and its own legend beside it."""
    from plotly.subplots import make_subplots

    titles = [f"{panel.title}<br><sup>{panel.subtitle}</sup>" if panel.subtitle else panel.title for panel in panels]
    rows = max(len(panels), 1)
    fig = make_subplots(rows=rows, cols=1, subplot_titles=titles or [title], vertical_spacing=0.45 / rows)
    for index, panel in enumerate(panels, start=1):
        own = not any(trace.legendgroup for trace in panel.traces)  # grouped bars share the first legend
        legend = f"legend{index}" if own and index > 1 else "legend"
        for trace in panel.traces:
            trace.legend = legend
            fig.add_trace(trace, row=index, col=1)
        fig.update_xaxes(title_text=panel.x_title, row=index, col=1)
        fig.update_yaxes(title_text=panel.y_title, row=index, col=1)
        if own or index == 1:
            fig.update_layout({legend: {"y": fig.get_subplot(index, 1).yaxis.domain[1], "yanchor": "top", "x": 1.02, "xanchor": "left"}})
    fig.update_layout(title=title, barmode="group", height=max(400 * len(panels), 450), template="plotly_white")
    return fig


def curves_figure(document: dict[str, Any], data: str | None = None):
    """The sweeps and detection ROCs of a stored JSON document (what the app's curves page draws);
    `data`, the run's data folder from its config, names the images in each subtitle."""
    return _assemble(document["title"], _sweep_and_detection_panels(document["results"], data))


def curve_run_labels(runs: Sequence[tuple[Path, dict[str, Any]]]) -> list[str]:
    """The app's menu label of each stored (JSON path, document) sweep or detection run, one per file.
    A title names only the kind, purifier and classifier, so a re-run elsewhere (a smaller or an eps-2/255
    t* sweep) shares the committed run's title: there the label adds the folder and the image count, and
    neither run hides the other."""
    titles = [document["title"] for _, document in runs]
    folders = [path.parent for path, _ in runs]
    labels = []
    for (path, document), title in zip(runs, titles, strict=True):
        if titles.count(title) == 1:
            labels.append(title)
            continue
        where = path.parent.name if folders.count(path.parent) == 1 else f"{path.parent.name}/{path.name}"
        counts = sorted({r["metrics"]["n"] for r in document["results"] if "sweep" in r or "detection" in r})
        labels.append(f"{title} ({where}, {'/'.join(map(str, counts))} images)")
    return labels


def certified_figure(results: Sequence[dict[str, Any]]):
    """Certified balanced accuracy against L2 radius, one line per certify result (sigma)."""
    import plotly.graph_objects as go

    from core.certified import certified_curve

    fig = go.Figure()
    for result in sorted(results, key=lambda r: r["sigma"]):
        curve = certified_curve(result)
        data = result.get("data") or {}
        where = f"{'/'.join(Path(data['folder']).parts[-2:])}, split '{data['split']}'" if data else "data not recorded"
        denoiser = result.get("denoiser") or "not recorded"
        alpha = (result.get("config") or {}).get("alpha")
        alpha = "not recorded" if alpha is None else f"{alpha:g}"
        name = (
            f"{result.get('classifier', '?')}, sigma {result['sigma']:g}, denoiser {denoiser} "
            f"(n = {result['n']} noise draws on {result.get('device', 'a device not recorded')}, alpha {alpha}; {result['images']} images of {where})"
        )
        fig.add_trace(go.Scatter(x=curve["radius"], y=[100 * v for v in curve["certified_balanced_accuracy"]], mode="lines", name=name))
    fig.update_xaxes(title_text=f"L2 radius ([0, 1] pixels at the classifier's {certified_resolution(results)})")
    fig.update_yaxes(title_text="certified balanced accuracy (%)", range=[0, 100])
    fig.update_layout(
        title="Certified robustness (randomized smoothing, CERTIFY): no attack within the radius can change these answers", template="plotly_white", height=450
    )
    return fig


def certified_resolution(results: Sequence[dict[str, Any]]) -> str:
    """The input the radii of `results` are measured at, for the curve's axis and the app's caption alike:
    '128 px input' when every result records one size, else 'input resolution' (a 32 px CIFAR-10 model's
    radius is not an X-ray's)."""
    sizes = {_certified_input_size(result) for result in results}
    return f"{next(iter(sizes))} px input" if len(sizes) == 1 and None not in sizes else "input resolution"


def _certified_input_size(result: dict[str, Any]) -> int | None:
    """The side length the radii are measured at, as the result records it (results written before it
    was recorded: the shipped classifier card's)."""
    from core.weights import shipped_cards

    return result.get("image_size") or shipped_cards().get(result.get("classifier"), {}).get("image_size")


def output_paths(preset: Preset, out_dir: Path) -> dict[str, Path]:
    """The files `write_outputs` writes for `preset` in `out_dir` (a PNG too when kaleido is installed)."""
    stem = Path(out_dir) / preset.name
    suffixes = {"markdown": ".md", "csv": ".csv", "json": ".json", "html": ".html", "config": ".config.json"}
    return {kind: stem.with_name(stem.name + suffix) for kind, suffix in suffixes.items()}


def written_config(preset: Preset) -> dict:
    """The resolved preset as written beside the outputs (data as a portable path), in JSON types: the
    settings a rerun compares (`check_replaceable`); `write_outputs` adds the table's `provenance`."""
    return json.loads(json.dumps(preset.resolved() | {"data": portable_path(preset.data)}))


def table_provenance(records: list[dict]) -> dict[str, Any]:
    """What every other output's `provenance` says (software, weights), with the weights and data the cells
    used read from the records: a table reuses stored cells without loading their networks. The software
    is the code that wrote the table; the commit that computed each cell stays in the results store."""
    from core.results import software_provenance

    weights: dict[str, str | None] = {}
    for record in records:
        for name, sha256 in _cell_weights(record["config"]):
            if weights.get(name) is None:  # a cell stored without its card's SHA-256 hides no other's
                weights[name] = sha256
    data_hashes = sorted({record["config"]["data"]["hash"] for record in records if (record["config"].get("data") or {}).get("hash")})
    return {"software": software_provenance(), "weights": dict(sorted(weights.items())), "data_hashes": data_hashes}


def _cell_weights(config: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(file, card SHA-256) of every weights file a cell's config names (None: stored without one). A
    shipped file is named as `provenance_of` names it (vit.safetensors); one the preset points at, by that
    path, so that two files of one name (a retrained vit beside the shipped one) are both kept."""
    from core.purifiers import weights_stem

    used = []
    for role in ("classifier", "substitute", "sevit"):
        model = config.get(role)
        if model:
            used.append((model.get("weights") or f"{model['name']}.safetensors", model.get("sha256")))
            if "backbone_sha256" in model:  # sevit's heads sit on the shipped vit (core.tables.runner.model_identity)
                used.append(("vit.safetensors", model["backbone_sha256"]))
    purifier = config.get("purifier")
    if purifier and purifier.get("weights_sha256"):
        stem = weights_stem(purifier["name"], purifier["params"])
        used.append((f"{stem}.safetensors", purifier["weights_sha256"]))
    return used


def check_replaceable(preset: Preset, out_dir: Path, overwrite: bool = False) -> None:
    """Refuse, before any compute, to replace a table's outputs with those of other settings: another
    --limit, --eot, --data or --only would silently swap a committed table for a smaller one, and files
    without purifylab's config beside them are someone else's. A rerun of the same config (a re-render,
    or the same table with more cells stored) replaces them; --overwrite replaces anything."""
    paths = output_paths(preset, out_dir)
    existing = [path for path in [*paths.values(), paths["html"].with_suffix(".png")] if path.exists()]
    if overwrite or not existing:
        return
    folder_hint = "pass --overwrite to replace them or choose another --out-dir"
    try:
        before = json.loads(paths["config"].read_text())
    except (OSError, ValueError):
        before = None
    if not isinstance(before, dict):  # purifylab writes a JSON object there; valid JSON of another shape is not its config either
        raise PurifyLabError(f"{existing[0]} exists and purifylab did not write it (no readable {paths['config'].name} beside it); {folder_hint}")
    after = written_config(preset)
    # what produced the earlier table (its commit, its weights) is no setting: a rerun at a new commit may replace it
    changed = sorted(key for key in (set(before) | set(after)) - {"provenance"} if before.get(key) != after.get(key))
    if changed:
        shown = ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "")
        raise PurifyLabError(f"{Path(out_dir)} holds {preset.name} computed with other settings ({shown} differ); {folder_hint}")


def _title_of_run(preset: Preset, records: list[dict]) -> str:
    """The preset's title counting the images its cells saw: a limit above the split's size read the whole split."""
    counts = {record["metrics"]["n"] for record in records if "n" in record["metrics"]}
    return preset.title_counting(counts.pop()) if len(counts) == 1 else preset.title


def write_outputs(preset: Preset, records: list[dict], out_dir: Path) -> dict[str, Path]:
    """PRESET.md, .csv, .json, .html (and .png when kaleido is installed) and config.json in out_dir,
    all whole or none replaced (`write_files`): a full disk left a truncated JSON that broke the app."""
    out_dir = Path(out_dir)
    checks = collapse_checks(records)
    for table in preset.tables:
        checks += masking_checks(records, table, preset.sanity.tolerance)
        checks += convergence_checks(records, table, preset.sanity.tolerance)
        checks += minimal_attack_checks(records, table)
    shown = dataclasses.replace(preset, title=_title_of_run(preset, records))  # the config beside them keeps the settings as given
    markdown = "\n".join(
        filter(None, [markdown_tables(shown, records, checks), sweep_markdown(shown, records), detection_markdown(shown, records), sanity_markdown(checks)])
    )
    paths = output_paths(preset, out_dir)
    fig = figure(shown, records)
    contents: dict[Path, str | bytes] = {
        paths["markdown"]: markdown,
        paths["csv"]: csv_text(records, checks),
        paths["json"]: json.dumps(json_document(shown, records, checks), indent=1, sort_keys=True) + "\n",
        paths["config"]: json.dumps({**written_config(preset), "provenance": table_provenance(records)}, indent=1, sort_keys=True) + "\n",
        paths["html"]: fig.to_html(include_plotlyjs="cdn"),  # 4.8 MB lighter; the app draws from the JSON
    }
    try:
        import kaleido  # noqa: F401
    except ImportError:
        pass  # PNG export needs kaleido, which is optional
    else:
        paths["png"] = out_dir / f"{preset.name}.png"
        contents[paths["png"]] = fig.to_image(format="png")
    write_files(contents)
    return paths
