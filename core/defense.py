"""Named defenses: a classifier and a purifier chosen together on validation, in one committed file.

`configs/defenses/<name>.yaml` is the single place where "the recommended defense" is written down;
the CLI (`--defense NAME`), the app's default panel and the README read it, so the defense a user
gets is the one that was measured. The file also says why it was chosen, on which split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from core.errors import PurifyLabError, check_types
from core.paths import CONFIGS_DIR

if TYPE_CHECKING:
    from core.purifiers.base import PurifierConfig

DEFENSES_DIR = CONFIGS_DIR / "defenses"


def purifier_spec_text(name: str, params: Mapping[str, object]) -> str:
    """The CLI's NAME:k=v,... form of a purifier and its settings: the name alone reads blur:sigma=0.5 and
    blur:sigma=3 as one purifier, though they score 1.0 and 0.5."""
    settings = ",".join(f"{key}={value}" for key, value in params.items())
    return f"{name}:{settings}" if settings else name


@dataclass(frozen=True)
class Defense:
    name: str
    classifier: str
    purifier: str
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    chosen_on: str = ""  # the validation evidence, in one sentence

    def __post_init__(self) -> None:
        # `params: t_star=0.1` would load as a string and fail later as a Python error, not a message.
        check_types(self)
        for key in self.params:
            if not isinstance(key, str):
                raise PurifyLabError(f"params keys must be purifier parameter names; got {key!r}")

    @property
    def purifier_spec(self) -> str:
        """The CLI's NAME:k=v,... form of the purifier."""
        return purifier_spec_text(self.purifier, self.params)

    def purifier_config(self) -> PurifierConfig:
        """The purifier's typed, range-checked settings, defaults filled in: what `evaluate` runs, so a
        command reading one setting (certify's sigma) gets the same checks, and 0.160 equals 0.16. Its
        import costs torch: call it after the refusals that need none."""
        from core.purifiers import purifier_config

        try:
            return purifier_config(self.purifier, **self.params)
        except PurifyLabError as error:
            raise PurifyLabError(f"{self.name}.yaml: {error}") from None

    def runs_purifier(self, name: str, params: Mapping[str, object]) -> bool:
        """Whether purifier `name` at `params` (typed values or the CLI's strings) is this defense's,
        compared as checked settings, not as text."""
        from core.purifiers import purifier_config

        return name == self.purifier and purifier_config(name, **params) == self.purifier_config()


def refuse_conflicts(subject: str, settings: Mapping[str, tuple[object, object]]) -> tuple:
    """The values a named defense sets, from {setting: (value given beside it or None, the defense's)}.
    A given value that differs is refused, never silently dropped: it would measure another model or
    purifier under the defense's name. `subject` says where the defense was named ("--defense
    recommended", "table 't' columns[2]: defense 'recommended'")."""
    for key, (given, chosen) in settings.items():
        if given is not None and given != chosen:
            raise PurifyLabError(f"{subject} sets {key} {chosen}, but {key} {given} was given; drop one of them")
    return tuple(chosen for _, chosen in settings.values())


def list_defenses(directory: Path | None = None) -> list[str]:
    return sorted(path.stem for path in Path(directory or DEFENSES_DIR).glob("*.yaml"))


def load_defense(name: str, directory: Path | None = None) -> Defense:
    """The defense `configs/defenses/<name>.yaml`; a one-line error names the choices."""
    path = Path(directory or DEFENSES_DIR) / f"{name}.yaml"
    if not path.is_file():
        raise PurifyLabError(f"defense '{name}' not found; choose one of: {', '.join(list_defenses(directory)) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise PurifyLabError(f"{path.name} is not readable YAML: {error}") from None
    known = set(Defense.__dataclass_fields__) - {"name"}
    if not isinstance(raw, dict) or not {"classifier", "purifier"} <= set(raw) or set(raw) - known:
        raise PurifyLabError(f"{path.name} must be a mapping with classifier, purifier and optionally {', '.join(sorted(known - {'classifier', 'purifier'}))}")
    try:
        return Defense(name=name, **raw)
    except PurifyLabError as error:
        raise PurifyLabError(f"{path.name}: {error}") from None
