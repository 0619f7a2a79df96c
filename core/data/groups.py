"""Which images belong to one patient, so that a split never puts a patient on two sides.

Three sources, in order: a `groups.csv` (columns path, group) shipped at the data set's root; the
Kermany file-name rule, for the names that follow it; otherwise each image is its own group, with a
warning that counts them, because a split that cannot see patients can leak them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.data.warning import warn
from core.errors import PurifyLabError

GROUPS_FILE = "groups.csv"
ONE_GROUP_PER_IMAGE = "one group per image"
# Kermany et al.: PNEUMONIA files are personN_{bacteria|virus}_M[_K].jpeg (patient personN); NORMAL
# files are [NORMAL2-]IM-NNNN-MMMM[-KKKK].jpeg (patient [NORMAL2-]IM-NNNN).
_KERMANY = (re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+(?:_\d+)?$"), re.compile(r"^((?:NORMAL\d+-)?IM-\d+)(?:-\d+){1,2}$"))


@dataclass(frozen=True)
class Grouping:
    """A group id per image (aligned with the image set's sources) and the rule that gave them."""

    ids: tuple[str, ...]
    rule: str  # GROUPS_FILE, "kermany file names" or ONE_GROUP_PER_IMAGE


def kermany_patient(source: str) -> str | None:
    """The patient id in a Kermany file name (class folder kept, since the series differ), or None."""
    path = PurePosixPath(source)
    for pattern in _KERMANY:
        match = pattern.match(path.stem)
        if match:
            return f"{path.parent.name}/{match.group(1)}"
    return None


def _read_groups_file(path: Path, sources: Sequence[str]) -> tuple[str, ...]:
    """Group ids from `path`. utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark,
    which would otherwise become part of the first column's name."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            # 'path, group' as a hand-written header has it: the names are the columns' names, spaces aside.
            reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PurifyLabError(f"cannot read {path}: {error}") from None
    if rows and not {"path", "group"} <= set(rows[0]):
        raise PurifyLabError(f"{path} must have the columns path,group; it has {','.join(rows[0])}")
    group_of = _group_of(path, rows)
    missing = [source for source in sources if source not in group_of]
    if missing:
        listed = next(iter(group_of), None)
        raise PurifyLabError(
            f"{path} names no group for {len(missing)} image(s), e.g. {missing[0]}: paths are CLASS/IMAGE relative to its folder"
            + (f" (it lists e.g. {listed})" if listed is not None else "")
        )
    return tuple(group_of[source] for source in sources)


def _group_of(path: Path, rows: list[dict[str, str | None]]) -> dict[str, str]:
    """path -> group, refusing a blank group (every such image would become one patient) and a path
    given two groups (the last would win, silently splitting a patient). Cells are stripped and a
    leading './' dropped: a spreadsheet's trailing space or `find .`'s prefix would otherwise make
    one patient two groups, or an image no group, without a word."""
    group_of: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        image, group = (row["path"] or "").strip().removeprefix("./"), (row["group"] or "").strip()
        if not group:
            raise PurifyLabError(f"{path} line {line}: {image or 'a row'} has an empty group; give every image its patient id")
        if group_of.setdefault(image, group) != group:
            raise PurifyLabError(f"{path} line {line}: {image} is listed with two groups ({group_of[image]}, {group}); keep one")
    return group_of


def group_images(sources: Sequence[str], root: str | Path | None = None) -> Grouping:
    """Group ids for `sources` (paths relative to `root`, as an ImageSet records them)."""
    groups_file = Path(root) / GROUPS_FILE if root is not None and Path(root).is_dir() else None
    if groups_file is not None and groups_file.is_file():
        return Grouping(_read_groups_file(groups_file, sources), GROUPS_FILE)
    patients = [kermany_patient(source) for source in sources]
    unmatched = [source for source, patient in zip(sources, patients, strict=True) if patient is None]
    if len(unmatched) == len(sources):
        warn(
            f"no patient ids for these {len(sources)} images (no {GROUPS_FILE}, file names not in a known pattern): "
            "each image is its own group, so a patient with several images may sit on both sides of a split"
        )
        return Grouping(tuple(sources), ONE_GROUP_PER_IMAGE)
    if unmatched:
        # One stray name must not send every patient of the folder back to an image-by-image split.
        warn(
            f"{len(unmatched)} of {len(sources)} names are not Kermany file names (e.g. {unmatched[0]}) and no {GROUPS_FILE} gives their "
            "patients: each of those images is its own group, so a patient among them may sit on both sides of a split"
        )
    return Grouping(tuple(patient or source for patient, source in zip(patients, sources, strict=True)), "kermany file names")
