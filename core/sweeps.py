"""Accuracy against a purifier's depth: t* (ddpm_defense_pcam.md, Fig. 1) or depth (Blau et al., Fig. 4).

A sweep is a one-sweep preset, so it goes through the same cells, results store, outputs and
sharding as the tables: `purifylab sweep tstar --purifier ddpm --values 0.01,0.02,0.04 --attack pgd`.
"""

from __future__ import annotations

from pathlib import Path

from core.attacks import threat_model
from core.data.sources import data_listing
from core.errors import PurifyLabError
from core.models import classifiers
from core.purifiers import PURIFIERS
from core.tables.preset import DEFAULT_DATA, SWEEP_KINDS, AttackRow, ModelSpec, Preset, SweepSpec, sweep_parameter


def parse_values(text: str) -> tuple[float, ...]:
    """'0.01,0.02,0.04' -> (0.01, 0.02, 0.04); one-line error otherwise. Each value is one row of the
    sweep, so a repeated one (0.02,0.020) is refused: it would print two cells under one header."""
    try:  # an empty item ('0.1,,0.2') is a typo, not a value to skip
        values = tuple(float(item) for item in text.split(",")) if text.strip() else ()
    except ValueError:
        raise PurifyLabError(f"--values '{text}' must be comma-separated numbers, e.g. 0.01,0.02,0.04") from None
    if not values:
        raise PurifyLabError("--values is empty; give at least one number")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise PurifyLabError(f"--values '{text}' repeats {', '.join(f'{v:g}' for v in repeated)}; give each value once")
    return values


def check_sweep_names(kind: str, purifier: str, classifier: str, threat: str | None = None) -> None:
    """The sweep kind, purifier, classifier and threat model (None: no attack) by name, each against
    lists that need no torch: `purifylab sweep` refuses a typo before torch loads, as `evaluate` does,
    not after the seconds its import takes. Whether the purifier has a sweep of that kind is a fact of
    its class, checked later (`sweep_parameter`)."""
    if kind not in SWEEP_KINDS:
        raise PurifyLabError(f"sweep '{kind}' is unknown; choose one of: {', '.join(sorted(SWEEP_KINDS))}")
    PURIFIERS.check(purifier)
    classifiers.check(classifier)
    if threat is not None:
        threat_model(threat)


def sweep_preset(
    kind: str,
    purifier: str,
    values: tuple[float, ...],
    *,
    classifier: str = "vit",
    classifier_weights: str | None = None,
    params: dict | None = None,
    attack: AttackRow | None = None,
    threat: str = "grey",
    data: str | Path = DEFAULT_DATA,
    split: str = "val",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    eot: int = 1,
    redraws: int = 1,
) -> Preset:
    """The one-sweep preset `purifylab sweep` runs (named sweep-<kind>-<purifier>)."""
    check_sweep_names(kind, purifier, classifier, threat if attack is not None else None)
    parameter = sweep_parameter(kind, purifier)
    if parameter in (params or {}):
        raise PurifyLabError(f"--param {parameter} is what the {kind} sweep varies; give its values with --values")
    classes = data_listing(data, split).classes  # an unreadable --data is refused before any model is built
    if len(classes) < 2:
        raise PurifyLabError(f"--data {data} holds one class ({classes[0]}); a sweep scores a classifier, which needs images of its classes")
    name = f"sweep-{kind}-{purifier}"
    spec = SweepSpec(
        name=name, kind=kind, classifier=ModelSpec(classifier, classifier_weights), purifier=purifier,
        values=tuple(values), params=dict(params or {}), attack=attack, threat=threat,
    )  # fmt: skip
    preset = Preset(
        name=name, title=f"Accuracy vs {parameter} of {purifier} in front of {classifier}", data=str(data), split=split,
        limit=limit, seed=seed, batch_size=batch_size, eot=eot, redraws=redraws, sweeps=(spec,),
    )  # fmt: skip
    preset.validate()
    return preset
