"""Duplicate removal and deterministic stratified splits by patient.

Two images of one patient on both sides of a split leak the answer from training into evaluation
(the Kermany train folder holds up to 30 images per child), and so do pixel-identical images. So
`make_splits` removes duplicates, then assigns whole groups (patients, see `core.data.groups`) to
the splits, stratified by class; the saved `SplitSpec` pins the exact data it was made from
through a hash of the sorted source list. A saved split file is a record for a reader: no command
reads one back, since train, evaluate and certify cut the same split again
(`core.data.loading.project_split`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from core.data.groups import ONE_GROUP_PER_IMAGE, Grouping, group_images
from core.data.imageset import ImageSet
from core.errors import PurifyLabError

SPLIT_NAMES = ("train", "val", "test")
# Version 2 splits by patient; version-1 files were made image by image, before patients were known.
SPLIT_FORMAT = 2


def pixel_digest(pixels: np.ndarray) -> str:
    """Identity of decoded pixels: the shape plus the raw bytes, so a 28x28 and a 14x56 image never collide."""
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def group_duplicates(digests: Sequence[str]) -> list[list[int]]:
    """Positions sharing a digest, groups of two or more, ordered by their first member."""
    positions: dict[str, list[int]] = {}
    for index, digest in enumerate(digests):
        positions.setdefault(digest, []).append(index)
    return sorted((group for group in positions.values() if len(group) > 1), key=lambda group: group[0])


def find_duplicates(image_set: ImageSet) -> list[list[int]]:
    """Groups of indices whose decoded pixels are identical."""
    images = image_set.images.numpy()
    return group_duplicates([pixel_digest(image) for image in images])


def _first_of_each_group(image_set: ImageSet) -> tuple[np.ndarray, list[int]]:
    """(indices kept, indices removed): every duplicate group keeps its first member."""
    removed = sorted(index for group in find_duplicates(image_set) for index in group[1:])
    dropped = set(removed)
    return np.array([i for i in range(len(image_set)) if i not in dropped], dtype=np.int64), removed


def dedupe(image_set: ImageSet) -> tuple[ImageSet, list[int]]:
    """Keep the first member of every duplicate group; also return the removed indices."""
    kept, removed = _first_of_each_group(image_set)
    return image_set.subset(kept), removed


def _largest_remainder(count: int, fractions: Sequence[float]) -> list[int]:
    """Split `count` into integer parts proportional to `fractions` that add up to exactly `count`."""
    exact = [count * f for f in fractions]
    parts = [int(np.floor(x)) for x in exact]
    by_remainder = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in by_remainder[: count - sum(parts)]:
        parts[i] += 1
    return parts


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLIT_NAMES) or any(not 0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise PurifyLabError(f"fractions must be three numbers in [0, 1] for {'/'.join(SPLIT_NAMES)} adding up to 1, got {fractions}")
    return fractions


def stratified_split(labels: Sequence[int] | np.ndarray | torch.Tensor, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """Indices per split ("train", "val", "test"), each class divided in `fractions`; same seed, same split."""
    fractions = _check_fractions(fractions)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.cumsum([0, *_largest_remainder(len(members), fractions)])
        for name, start, stop in zip(SPLIT_NAMES, bounds[:-1], bounds[1:], strict=True):
            parts[name].append(members[start:stop])
    return {name: np.sort(np.concatenate(chunks)) if chunks else np.empty(0, np.int64) for name, chunks in parts.items()}


def stratified_group_split(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    groups: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Indices per split with every group on one side and each class near `fractions`.

    The greedy rule of scikit-learn's StratifiedGroupKFold, written out for three unequal parts
    (sklearn is not a dependency): groups are shuffled by `seed`, taken largest first, and each
    goes to the split that most lacks its classes, splits of fraction 0 getting none.
    """
    fractions = _check_fractions(fractions)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(groups) != labels.size:
        raise PurifyLabError(f"{labels.size} labels but {len(groups)} group ids")
    names, group_index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    class_count = int(labels.max()) + 1 if labels.size else 0
    counts = np.zeros((len(names), class_count), dtype=np.int64)
    np.add.at(counts, (group_index, labels), 1)
    target = np.outer(fractions, counts.sum(axis=0)).astype(np.float64)
    allocated = np.zeros_like(target)
    open_splits = np.array([f > 0 for f in fractions])
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    split_of_group = np.empty(len(names), dtype=np.int64)
    for group in order:
        need = (target - allocated) @ counts[group]
        need[~open_splits] = -np.inf
        chosen = int(np.argmax(need))
        split_of_group[group] = chosen
        allocated[chosen] += counts[group]
    split_of_item = split_of_group[group_index]
    return {name: np.flatnonzero(split_of_item == i) for i, name in enumerate(SPLIT_NAMES)}


def _hash_sources(sources) -> str:
    """surrogateescape: a file name that is not UTF-8 hashes as its bytes; valid names keep their hash."""
    return hashlib.sha256("\n".join(sorted(sources)).encode("utf-8", "surrogateescape")).hexdigest()


def data_hash(image_set: ImageSet) -> str:
    """sha256 of the sorted source list: names the exact data a split or a model was made from."""
    return _hash_sources(image_set.sources)


def data_hash_of_folder(path: str | Path) -> str:
    """`data_hash` from the file list alone, without decoding a pixel (a cheap identity check)."""
    from core.data.sources import list_items

    return _hash_sources(item.source for item in list_items(path, None).items)


@dataclass(frozen=True)
class SplitSpec:
    """A reproducible split: indices into the ImageSet whose `data_hash` matches, duplicates left out,
    no group (patient) on two sides."""

    seed: int
    fractions: dict[str, float]
    indices: dict[str, tuple[int, ...]]
    data_hash: str
    item_count: int
    classes: tuple[str, ...]
    duplicates_removed: tuple[int, ...]
    grouping: str  # how group ids were derived (core.data.groups)
    group_count: int
    format: int = SPLIT_FORMAT

    def to_json(self) -> str:
        """One line per field (and per split), so the file stays short and diffs stay readable."""
        lines = []
        for key, value in asdict(self).items():
            if isinstance(value, dict):
                inner = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
                lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
            else:
                lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path


def make_splits(image_set: ImageSet, val: float = 0.1, test: float = 0.1, seed: int = 0, grouping: Grouping | None = None) -> SplitSpec:
    """Dedupe, then split whole groups stratified per class; indices refer to `image_set` itself.

    `grouping` defaults to the file-name rule over the image set's sources (`core.data.groups`)."""
    fractions = _check_fractions((1.0 - val - test, val, test))
    grouping = grouping if grouping is not None else group_images(image_set.sources)
    kept, removed = _first_of_each_group(image_set)
    kept_groups = [grouping.ids[i] for i in kept]
    kept_labels = image_set.labels.numpy()[kept]
    if grouping.rule == ONE_GROUP_PER_IMAGE:
        # The same thing for singleton groups, kept so that image-level splits made before stay identical.
        parts = stratified_split(kept_labels, fractions, seed)
    else:
        parts = stratified_group_split(kept_labels, kept_groups, fractions, seed)
    return SplitSpec(
        seed=seed,
        fractions=dict(zip(SPLIT_NAMES, fractions, strict=True)),
        indices={name: tuple(int(i) for i in kept[positions]) for name, positions in parts.items()},
        data_hash=data_hash(image_set),
        item_count=len(image_set),
        classes=image_set.classes,
        duplicates_removed=tuple(removed),
        grouping=grouping.rule,
        group_count=len(set(kept_groups)),
    )
