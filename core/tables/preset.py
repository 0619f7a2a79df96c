"""Table presets: one YAML file in configs/ per table set, loaded into typed, validated dataclasses.

A preset names everything that changes a number (data, split, limit, seed, models with optional
weight files, attacks with budgets, purifiers with parameters, threat models, EOT and re-draws), so
every cell is a pure function of its config and a table regenerates from the file alone.

The attack, threat-model and purifier registries import torch (seconds): they are imported only where
a preset is built or checked, so listing presets (`preset_heading`) and showing stored tables stay light.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from core.data.locations import XRAY_TEST_DIR
from core.errors import PurifyLabError, check_range, typed
from core.paths import CONFIGS_DIR, DATA_DIR, REPO_ROOT

if TYPE_CHECKING:
    from core.attacks import AttackConfig

DEFAULT_DATA = str(XRAY_TEST_DIR)  # X-ray tables report on the test cohort
SWEEP_KINDS = ("tstar", "depth")
TABLE_METRICS = ("accuracy", "balanced_accuracy")
Built = TypeVar("Built")


def sweep_parameter(kind: str, purifier: str) -> str:
    """The config field a `kind` sweep varies on `purifier`, as the purifier class declares it."""
    from core.purifiers import PURIFIERS

    parameter = PURIFIERS.get(purifier).sweeps.get(kind)
    if parameter is None:
        allowed = ", ".join(name for name in PURIFIERS.names() if kind in PURIFIERS.get(name).sweeps)
        raise PurifyLabError(f"a '{kind}' sweep does not apply to purifier '{purifier}'; use one of: {allowed}")
    return parameter


def _build(cls: type, raw: Any, where: str):
    """A dataclass from a YAML mapping: unknown keys, missing required fields and every value's type
    (from the field's annotation, `typed`) are refused with a one-line message naming the field."""
    if cls is AttackRow:  # flat in YAML, an AttackConfig inside
        return attack_row(raw, where)
    if isinstance(raw, str) and cls in (ModelSpec,):
        raw = {"name": raw}
    raw = _mapping(raw, where)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise PurifyLabError(f"{where}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(names))}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in raw]
    if missing:
        raise PurifyLabError(f"{where}: '{missing[0]}' is missing; required: {', '.join(required)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: typed(f"{where}.{key}", value, hints[key]) for key, value in raw.items()})


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PurifyLabError(f"{where} must be a mapping, got {type(raw).__name__}")
    return dict(raw)


@dataclass(frozen=True)
class ModelSpec:
    """A registered classifier; `weights` points at a specific safetensors file instead of weights/<name>."""

    name: str
    weights: str | None = None
    label: str | None = None

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class AttackRow:
    """One table row: 'Clean' (attack None) or an attack. In YAML the row is flat (label plus the
    AttackConfig fields but seed: every attack of a preset is seeded by the preset's seed)."""

    label: str
    attack: AttackConfig | None = None

    @property
    def name(self) -> str | None:
        return None if self.attack is None else self.attack.name

    def attack_config(self, seed: int) -> AttackConfig | None:
        """The row's attack under the preset's seed."""
        return None if self.attack is None else dataclasses.replace(self.attack, seed=seed)

    def flat(self) -> dict[str, Any]:
        """The row as YAML writes it (a clean row shows AttackConfig's defaults with name None)."""
        from core.attacks import AttackConfig

        fields = dataclasses.asdict(self.attack if self.attack is not None else AttackConfig())
        fields.pop("seed")
        return {"label": self.label, **fields, "name": self.name}


def attack_row(raw: Any, where: str) -> AttackRow:
    """A row from its flat YAML mapping, refusing unknown keys with a one-line message; AttackConfig
    checks the values, and its message is prefixed with the row's place."""
    from core.attacks import AttackConfig

    raw = _mapping(raw, where)
    allowed = {"label"} | {f.name for f in dataclasses.fields(AttackConfig)} - {"seed"}
    unknown = sorted(set(raw) - allowed)
    if unknown or "label" not in raw:
        problem = f"unknown key '{unknown[0]}'" if unknown else "no label"
        raise PurifyLabError(f"{where}: {problem}; allowed: {', '.join(sorted(allowed))}")
    label = typed(f"{where}.label", raw["label"], str)
    fields = {key: value for key, value in raw.items() if key != "label"}
    if fields.get("name") is None:
        return AttackRow(label)
    try:
        return AttackRow(label, AttackConfig(**fields))
    except PurifyLabError as error:
        raise PurifyLabError(f"{where}: {error}") from None


@dataclass(frozen=True)
class PurifierColumn:
    """One table column: a purifier with parameters, optionally on another classifier (e.g. resnet_at)."""

    label: str
    purifier: str = "none"
    params: dict = field(default_factory=dict)
    classifier: str | None = None  # overrides the table's classifier for this column
    classifier_weights: str | None = None
    trained_on: str | None = None  # "norm:eps" the column's model was adversarially trained on; AwT leaves it out
    # The table's threat models this column is attacked under (default: all). A purifier without a
    # network (noise, blur) has an exact gradient, so BPDA would only repeat the white-box cell.
    threats: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.threats is not None:
            object.__setattr__(self, "threats", tuple(self.threats))

    @property
    def undefended(self) -> bool:
        """The table's own classifier with nothing in front of it."""
        return self.purifier == "none" and self.classifier is None and self.trained_on is None


@dataclass(frozen=True)
class PaperClaim:
    """A figure the paper prints for one cell of the table (percent), which the re-run is judged against."""

    row: str
    column: str
    value: float
    threat: str | None = None  # None: the table's first threat model
    classifier: str | None = None  # a classifier's title; None: the table's first classifier

    def place(self, table: TableSpec) -> tuple[str, str, str, str]:
        """(classifier title, column, threat, row) of the claimed cell, the table's defaults filled in."""
        return (self.classifier or table.classifiers[0].title, self.column, self.threat or table.threats[0], self.row)


@dataclass(frozen=True)
class TableSpec:
    name: str
    caption: str
    classifiers: tuple[ModelSpec, ...]
    rows: tuple[AttackRow, ...]
    columns: tuple[PurifierColumn, ...]
    threats: tuple[str, ...] = ("grey",)
    averages: bool = False  # add AwT / AoA (mean over attack rows) as Blau et al.'s Table 2
    show_time: bool = False  # print seconds per image and NFE in each cell (DiffDefense Table 3)
    # "balanced_accuracy": each cell prints balanced accuracy with its 95 % interval, for the
    # imbalanced X-ray cohort (1 : 1.6 on test), where plain accuracy rewards answering PNEUMONIA.
    metric: str = "accuracy"
    # Check that the attack has converged: rows of one attack differing only in steps or in
    # eot_iter must level off (render.convergence_checks).
    convergence: bool = False
    claims: tuple[PaperClaim, ...] = ()  # the paper's figures, for the verdict list under the table

    def placements(self) -> list[tuple[PurifierColumn, str]]:
        """(column, threat) for every printed column: each column under the threats it is attacked with."""
        return [(column, threat) for column in self.columns for threat in self.threats if column.threats is None or threat in column.threats]


@dataclass(frozen=True)
class SweepSpec:
    """Accuracy against one purifier parameter (t* or depth), as ddpm-defense Fig. 1 / Blau Fig. 4."""

    name: str
    kind: str
    classifier: ModelSpec
    purifier: str
    values: tuple[float, ...]
    params: dict = field(default_factory=dict)
    attack: AttackRow | None = None
    threat: str = "grey"

    @property
    def parameter(self) -> str:
        return sweep_parameter(self.kind, self.purifier)

    def purifier_values(self) -> tuple[float | int, ...]:
        """The values as the purifier receives them: a blur depth is a whole level, the rest floats."""
        return tuple(int(value) if self.parameter == "depth" else float(value) for value in self.values)


@dataclass(frozen=True)
class DetectionSpec:
    """Attack detection ROC from DiffDefense's reconstruction error, with SEViT's consistency score."""

    name: str
    classifier: ModelSpec
    purifier_params: dict = field(default_factory=dict)
    attacks: tuple[AttackRow, ...] = ()
    adaptive_weight: float = 0.0  # > 0: also a detector-aware PGD whose loss subtracts weight * reconstruction error
    adaptive_steps: int = 10
    adaptive_eps: float = 0.03
    sevit: ModelSpec | None = None

    def adaptive_attack(self, seed: int) -> AttackConfig | None:
        """The detector-aware PGD's budget (None without one); AttackConfig refuses a bad eps or steps."""
        from core.attacks import AttackConfig

        return AttackConfig(name="pgd", eps=self.adaptive_eps, steps=self.adaptive_steps, seed=seed) if self.adaptive_weight > 0 else None

    @property
    def adaptive_label(self) -> str | None:
        """The detector-aware row's label: its attacker sees the reconstruction error, not the classifier only."""
        if self.adaptive_weight <= 0:
            return None
        steps = f"{self.adaptive_steps} step{'s' if self.adaptive_steps != 1 else ''}"
        return f"Adaptive PGD, sees the reconstruction error (L-inf {self.adaptive_eps:g}, {steps}, lambda {self.adaptive_weight:g})"

    def row_labels(self) -> list[str]:
        return [row.label for row in self.attacks] + ([self.adaptive_label] if self.adaptive_label else [])


@dataclass(frozen=True)
class SanitySpec:
    collapse_eps: tuple[float, ...] = (0.03, 0.1, 0.3)
    collapse_steps: int = 20
    tolerance: float = 0.02


@dataclass(frozen=True)
class PresetHeading:
    """What the preset list and the app's tables page show of a preset. Read without building the rest,
    whose checks import the attack and purifier registries (torch: seconds)."""

    name: str
    title: str
    data: str = DEFAULT_DATA


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    data: str = DEFAULT_DATA
    split: str = "all"  # with DEFAULT_DATA: the whole test cohort
    limit: int | None = None
    seed: int = 0
    batch_size: int = 16
    bootstrap: int = 1000
    redraws: int = 1
    eot: int = 1
    substitute: ModelSpec | None = None
    tables: tuple[TableSpec, ...] = ()
    sweeps: tuple[SweepSpec, ...] = ()
    detection: tuple[DetectionSpec, ...] = ()
    sanity: SanitySpec = SanitySpec()
    notes: str = ""

    def with_overrides(self, limit: int | None = None, data: str | None = None, eot: int | None = None, only: Sequence[str] | None = None) -> Preset:
        """The preset with the command line's changes; the resolved preset written beside the outputs records them.

        `only` keeps the named tables, sweeps and detection runs, so a CPU can compute part of a GPU-sized preset;
        its cells are the same cells the whole preset would compute, so a later full run reuses them.
        """
        limit, eot = typed("limit", limit, int | None), typed("eot", eot, int | None)
        only = typed("only", only, tuple[str, ...] | None)  # "table1" is one name, not six letters
        changes: dict[str, Any] = {}
        if only:
            changes.update(self._only(only))
        if limit is not None:
            if limit < 1:
                raise PurifyLabError(f"--limit must be a positive number of images, got {limit}")
            changes["limit"] = limit
            changes["title"] = self.title_counting(limit)
        if data is not None:
            changes["data"] = str(data)
        if eot is not None:
            changes["eot"] = eot
        preset = dataclasses.replace(self, **changes)
        preset.validate()
        return preset

    def title_counting(self, images: int) -> str:
        """The title with the images it counts set to `images`: a title that counts the preset's ("on 32
        X-rays") counts its limit's, and a table's outputs count the images its cells saw, which a limit
        above the split's size is not."""
        return self.title if self.limit is None else self.title.replace(f" on {self.limit} ", f" on {images} ")

    def _only(self, names: Sequence[str]) -> dict[str, Any]:
        parts = {"tables": self.tables, "sweeps": self.sweeps, "detection": self.detection}
        known = [part.name for group in parts.values() for part in group]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise PurifyLabError(f"--only {','.join(unknown)}: preset '{self.name}' has {', '.join(known)}")
        kept = {key: tuple(part for part in group if part.name in names) for key, group in parts.items()}
        note = f"Part of the preset only: {', '.join(names)} (the whole preset: {', '.join(known)})."
        return {**kept, "notes": f"{self.notes.strip()}\n\n{note}".strip()}

    def resolved(self) -> dict[str, Any]:
        """Everything, as the YAML spells it (attack rows flat)."""
        from core.attacks import AttackConfig

        def factory(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            if [key for key, _ in pairs] == ["label", "attack"]:  # an AttackRow
                return AttackRow(pairs[0][1], None if pairs[1][1] is None else AttackConfig(**pairs[1][1])).flat()
            return dict(pairs)

        return dataclasses.asdict(self, dict_factory=factory)

    def _check_threat(self, where: str, threat: str) -> None:
        """A known threat model, with what it needs from the preset (EOT draws, a substitute)."""
        from core.attacks import threat_model

        spec = threat_model(threat)
        try:  # the threat's own rule, on the draws its cells will spend (core.tables.runner)
            spec.check_eot(spec.draws_per_step(self.eot))
        except PurifyLabError as refused:  # in the preset's words: its one `eot` is what the user edits
            raise PurifyLabError(f"{where} uses {threat}: set eot >= 2 (got {self.eot})") from refused
        if spec.needs_substitute and self.substitute is None:
            raise PurifyLabError(f"{where} uses transfer: it needs a substitute model, which a preset names under 'substitute'")

    def validate(self) -> None:
        """Refuse bad settings before any model is loaded (attacks, threats, counts)."""
        from core.attacks import MAX_EOT, THREAT_MODELS, threat_model

        if self.redraws < 1 or self.eot < 1 or self.batch_size < 1:
            raise PurifyLabError(f"redraws, eot and batch_size must be >= 1 (got {self.redraws}, {self.eot}, {self.batch_size})")
        check_range("eot", self.eot, 1, MAX_EOT)  # before the threats' own rule, which would ask for eot >= 2 of 5000
        if self.bootstrap < 0 or self.seed < 0 or (self.limit is not None and self.limit < 1):
            raise PurifyLabError(f"bootstrap and seed must be >= 0 and limit >= 1 (got {self.bootstrap}, {self.seed}, {self.limit})")
        if not (self.tables or self.sweeps or self.detection):
            raise PurifyLabError(f"preset '{self.name}' defines no tables, sweeps or detection runs")
        _check_sanity(self.sanity)
        titled: dict[str, tuple[str, str | None]] = {}
        for model in (model for table in self.tables for model in table.classifiers):
            # the collapse check is placed by title: one title over two models would show one model's check for both
            first, this = titled.setdefault(model.title, (model.name, model.weights)), (model.name, model.weights)
            if first != this:
                raise PurifyLabError(f"classifier title '{model.title}' names two models across tables ({first} and {this}); give each its own label")
        _unique("table, sweep and detection names", [item.name for item in (*self.tables, *self.sweeps, *self.detection)])
        for table in self.tables:
            empty = [part for part in ("classifiers", "rows", "columns") if not getattr(table, part)]
            if empty:
                raise PurifyLabError(f"table '{table.name}' has no {empty[0]}: a table needs at least one classifier, row and column")
            _unique(f"table '{table.name}': row labels", [row.label for row in table.rows])
            _unique(f"table '{table.name}': column labels", [column.label for column in table.columns])
            _unique(f"table '{table.name}': classifier titles", [model.title for model in table.classifiers])
            if table.metric not in TABLE_METRICS:
                raise PurifyLabError(f"table '{table.name}': metric '{table.metric}' is not one of {', '.join(TABLE_METRICS)}")
            if not table.threats:
                raise PurifyLabError(f"table '{table.name}' has no threats: name at least one threat model ({', '.join(THREAT_MODELS)})")
            for threat in table.threats:
                self._check_threat(f"table '{table.name}'", threat)
            rows, columns = {row.label for row in table.rows}, {column.label for column in table.columns}
            titles = {model.title for model in table.classifiers}
            for claim in table.claims:
                if claim.row not in rows or claim.column not in columns or (claim.classifier is not None and claim.classifier not in titles):
                    raise PurifyLabError(
                        f"table '{table.name}': claim ({claim.row}, {claim.column}) names no cell; rows: {', '.join(sorted(rows))}; "
                        f"columns: {', '.join(sorted(columns))}"
                    )
                # NaN passes every comparison, so the verdict on a NaN claim was 'confirms'
                check_range(f"table '{table.name}': claim ({claim.row}, {claim.column}) value", claim.value, 0.0, 100.0, note="percent")
                if claim.threat is not None and claim.threat not in table.threats:
                    raise PurifyLabError(f"table '{table.name}': claim threat '{claim.threat}' is not one of {list(table.threats)}")
            for column in table.columns:
                if column.threats == ():  # its cells would be dropped from the table unseen, a claim on it left "not computed"
                    raise PurifyLabError(
                        f"table '{table.name}', column '{column.label}': threats is empty; name some of {list(table.threats)} or leave it out for all"
                    )
                if column.threats is not None and not set(column.threats) <= set(table.threats):
                    raise PurifyLabError(
                        f"table '{table.name}', column '{column.label}': threats {list(column.threats)} not all in the table's {list(table.threats)}"
                    )
        for sweep in self.sweeps:
            threat_model(sweep.threat)
            if sweep.kind not in SWEEP_KINDS:
                raise PurifyLabError(f"sweep '{sweep.name}': kind '{sweep.kind}' is not one of {', '.join(SWEEP_KINDS)}")
            if sweep.attack is not None:
                self._check_threat(f"sweep '{sweep.name}'", sweep.threat)
            _check_sweep_values(sweep)
        for spec in self.detection:
            _check_detection(spec)


def _check_sanity(sanity: SanitySpec) -> None:
    """The collapse check's settings, refused before any cell is computed: the collapse cell or the check
    refused them only after every table cell was, without naming the field (or stored an empty cell).
    Each eps is checked as the very attack the collapse cell runs (PGD, L-inf)."""
    from core.attacks import AttackConfig
    from core.attacks.config import MAX_STEPS

    if not sanity.collapse_eps:
        raise PurifyLabError("sanity.collapse_eps is empty; give at least one L-inf eps the undefended classifier must collapse at")
    for index, eps in enumerate(sanity.collapse_eps):
        try:
            AttackConfig(name="pgd", norm="linf", eps=eps)
        except PurifyLabError as error:
            raise PurifyLabError(f"sanity.collapse_eps[{index}]: {error}") from None
    check_range("sanity.collapse_steps", sanity.collapse_steps, 1, MAX_STEPS)
    check_range("sanity.tolerance", sanity.tolerance, 0.0, 1.0, note="accuracy difference on the [0, 1] scale")


def _check_sweep_values(sweep: SweepSpec) -> None:
    """Each value is one row of the sweep, as the purifier receives it: a repeated one printed its
    cells twice in one row under a single header, and a fractional depth was truncated unseen."""
    where, parameter = f"sweep '{sweep.name}'", sweep.parameter
    if not sweep.values:
        raise PurifyLabError(f"{where} has no values; give the {parameter} values to sweep")
    if parameter in sweep.params:
        raise PurifyLabError(f"{where}: params sets {parameter}, which the {sweep.kind} sweep varies; give its values under values")
    if parameter == "depth" and any(not float(value).is_integer() or value < 1 for value in sweep.values):
        raise PurifyLabError(f"{where}: depth values must be whole blur levels >= 1, got {', '.join(f'{v:g}' for v in sweep.values)}")
    _unique(f"{where}: {parameter} values", [str(value) for value in sweep.purifier_values()])


def _check_detection(spec: DetectionSpec) -> None:
    """A detection run's rows: each attacked (clean images are every row's negatives), labelled once,
    and the detector-aware attack's weight and budget in range; refused before any model is loaded."""
    where = f"detection '{spec.name}'"
    if spec.adaptive_weight < 0:
        raise PurifyLabError(f"{where}: adaptive_weight {spec.adaptive_weight:g} must be >= 0 (0: no detector-aware attack)")
    if not spec.attacks and spec.adaptive_weight == 0:
        raise PurifyLabError(f"{where} has no attacks: give at least one attack row, or adaptive_weight > 0 for the detector-aware PGD")
    for row in spec.attacks:
        if row.attack is None:
            raise PurifyLabError(f"{where}: row '{row.label}' names no attack; clean images are already every row's negatives, so each row needs a name")
    try:
        spec.adaptive_attack(seed=0)
    except PurifyLabError as error:
        raise PurifyLabError(f"{where}: the detector-aware PGD (adaptive_eps, adaptive_steps): {error}") from None
    _unique(f"{where}: row labels", spec.row_labels())


def _unique(what: str, labels: list[str]) -> None:
    """Cells are found by their labels: a repeated one would show the first cell's number in every place."""
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise PurifyLabError(f"{what} must be unique; repeated: {', '.join(repeated)}")


def _tuple(raw: Any, cls: type, where: str) -> tuple:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PurifyLabError(f"{where} must be a list")
    return tuple(_build(cls, item, f"{where}[{i}]") for i, item in enumerate(raw))


def _named_defense(column: Any, where: str) -> Any:
    """A column {label, defense: NAME} becomes the classifier, purifier and params of that defense file;
    the column's own value of any of them, when another, is refused rather than silently dropped, and
    so are its own weights (either would measure another model under the defense's name)."""
    if not isinstance(column, dict) or "defense" not in column:
        return column
    from core.defense import load_defense, refuse_conflicts

    column = dict(column)
    name = column.pop("defense")
    defense = load_defense(name)
    chosen = {"classifier": defense.classifier, "purifier": defense.purifier, "params": dict(defense.params)}
    given = {key: column.get(key) for key in chosen}
    if isinstance(given["params"], dict) and defense.runs_purifier(given["purifier"] or defense.purifier, given["params"]):
        given["params"] = None  # {t_star: 0.160} is the file's 0.16: settings compared, not text, as evaluate does
    refuse_conflicts(f"{where}: defense '{name}'", {key: (given[key], value) for key, value in chosen.items()})
    if column.get("classifier_weights") is not None:
        raise PurifyLabError(f"{where}: defense '{name}' fixes its classifier, but classifier_weights was given; drop one of them")
    return {**column, **chosen}


def _items(raw: Any, where: str) -> list:
    """A YAML list that may be left out (None: empty)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PurifyLabError(f"{where} must be a list")
    return raw


def preset_from_dict(raw: dict[str, Any], name: str) -> Preset:
    if not isinstance(raw, dict):
        raise PurifyLabError(f"preset '{name}' must be a YAML mapping")
    raw = dict(raw)
    tables = []
    for i, table in enumerate(_items(raw.pop("tables", None), "tables")):
        where = f"tables[{i}]"
        table = _mapping(table, where)
        table["classifiers"] = _tuple(table.get("classifiers"), ModelSpec, f"{where}.classifiers")
        table["rows"] = _tuple(table.get("rows"), AttackRow, f"{where}.rows")
        columns = _items(table.get("columns"), f"{where}.columns")
        table["columns"] = _tuple([_named_defense(c, f"{where}.columns[{j}]") for j, c in enumerate(columns)], PurifierColumn, f"{where}.columns")
        table["claims"] = _tuple(table.get("claims"), PaperClaim, f"{where}.claims")
        tables.append(_build(TableSpec, table, where))
    sweeps = []
    for i, sweep in enumerate(_items(raw.pop("sweeps", None), "sweeps")):
        where = f"sweeps[{i}]"
        sweep = _mapping(sweep, where)
        sweep["classifier"] = _build(ModelSpec, sweep.get("classifier", "vit"), f"{where}.classifier")
        if sweep.get("attack") is not None:
            sweep["attack"] = _build(AttackRow, sweep["attack"], f"{where}.attack")
        sweeps.append(_build(SweepSpec, sweep, where))
    detection = []
    for i, item in enumerate(_items(raw.pop("detection", None), "detection")):
        where = f"detection[{i}]"
        item = _mapping(item, where)
        item["classifier"] = _build(ModelSpec, item.get("classifier", "vit"), f"{where}.classifier")
        item["attacks"] = _tuple(item.get("attacks"), AttackRow, f"{where}.attacks")
        if item.get("sevit") is not None:
            item["sevit"] = _build(ModelSpec, item["sevit"], f"{where}.sevit")
        detection.append(_build(DetectionSpec, item, where))
    if raw.get("substitute") is not None:
        raw["substitute"] = _build(ModelSpec, raw["substitute"], "substitute")
    if raw.get("sanity") is not None:
        raw["sanity"] = _build(SanitySpec, raw["sanity"], "sanity")
    raw.update(_heading(raw, name))
    preset = _build(Preset, {**raw, "tables": tuple(tables), "sweeps": tuple(sweeps), "detection": tuple(detection)}, "preset")
    preset.validate()
    return preset


def _heading(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """The name, title and data of a preset's mapping as its Preset holds them: the title is the name
    unless given, and a data folder is resolved (`data_path`)."""
    heading = {"name": raw.get("name", name), "title": raw.get("title", name)}
    if raw.get("data") is not None:
        heading["data"] = data_path(typed("data", raw["data"], str))
    return heading


def _heading_from_dict(raw: Any, name: str) -> PresetHeading:
    return _build(PresetHeading, _heading(_mapping(raw, f"preset '{name}'"), name), "preset")


def data_path(data: str) -> str:
    """A preset's `data` as an absolute path. Presets in configs/ name a data set inside the data folder
    (chest_xray_pneumonia/test); the NAME.config.json beside every table records it as `portable_path`
    writes it, relative to the repository (../shared/data/...). A relative path that leaves the
    repository or names a path in it is read the second way, so a resolved config reruns as it stands."""
    relative = Path(data)
    from_repository = relative.parts[:1] == ("..",) or (REPO_ROOT / relative).exists()
    return str(((REPO_ROOT if from_repository else DATA_DIR) / relative).resolve())


def list_presets(configs_dir: Path = CONFIGS_DIR) -> list[str]:
    return sorted(path.stem for path in Path(configs_dir).glob("*.yaml"))


def load_preset(name_or_path: str | Path, configs_dir: Path = CONFIGS_DIR) -> Preset:
    """A preset by name (configs/<name>.yaml) or by path to a YAML file or to the NAME.config.json
    written beside a table (JSON is YAML). A refusal names the file."""
    return _read_preset(name_or_path, configs_dir, preset_from_dict)


def preset_heading(name_or_path: str | Path, configs_dir: Path = CONFIGS_DIR) -> PresetHeading:
    """A preset's name, title and data, found as `load_preset` finds it, without building the rest."""
    return _read_preset(name_or_path, configs_dir, _heading_from_dict)


def _read_preset(name_or_path: str | Path, configs_dir: Path, build: Callable[[Any, str], Built]) -> Built:
    """`build(YAML mapping, preset name)` of the preset file `name_or_path` names; a refusal names the file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        path = Path(configs_dir) / f"{name_or_path}.yaml"
    elif not path.is_file():
        raise PurifyLabError(f"preset file {path} does not exist")
    if not path.is_file():
        raise PurifyLabError(f"preset '{name_or_path}' not found; choose one of: {', '.join(list_presets(configs_dir)) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PurifyLabError(f"{path.name} is not valid YAML ({str(error).splitlines()[0]})") from None
    if path.suffix == ".json" and isinstance(raw, dict):  # a written config's provenance says what produced the table, no setting
        raw.pop("provenance", None)
    try:
        return build(raw, path.stem.removesuffix(".config"))
    except PurifyLabError as error:
        raise PurifyLabError(f"{path.name}: {error}") from None
