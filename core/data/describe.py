"""What a data set holds before anyone trains on it: classes, sizes, modes, duplicates, broken files.

Unlike `load_dataset`, this works on folders of mixed image sizes (it never stacks pixels) and
keeps only one hash per image in memory, so it is safe on sets of any size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from core.data.decode import decode, parallel_map
from core.data.sources import Item, list_items
from core.data.splits import group_duplicates, pixel_digest

MOST_COMMON_SIZES = 10
TABLE_ROWS = 40


@dataclass(frozen=True)
class _Facts:
    size: tuple[int, int] | None  # (width, height) as stored
    mode: str | None
    channels: int | None  # 1 for grey content, 3 for colour
    digest: str | None
    error: str | None


def _facts(item: Item) -> _Facts:
    decoded = decode(item.open, channels=None, size=None)
    if decoded.error is not None:
        return _Facts(None, None, None, None, decoded.error)
    return _Facts(decoded.original_size, decoded.original_mode, decoded.pixels.shape[0], pixel_digest(decoded.pixels), None)


@dataclass(frozen=True)
class DatasetSummary:
    location: str  # folder or file (plus split) that was read
    layout: str
    classes: tuple[str, ...]
    counts: dict[str, int]  # decodable images per class
    sizes: tuple[tuple[int, int, int], ...]  # (width, height, images), most common first
    distinct_sizes: int
    smallest: tuple[int, int] | None  # (width, height) with the fewest pixels
    largest: tuple[int, int] | None
    modes: dict[str, int]  # Pillow mode as stored -> images
    channels: int | None  # what load_dataset gives with channels=None: 1 if every image is grey, else 3
    duplicate_groups: tuple[tuple[str, ...], ...]  # sources of pixel-identical images
    duplicates_across_classes: int  # groups whose members carry different labels
    undecodable: tuple[tuple[str, str], ...]  # (source, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def table(self) -> str:
        """Compact human-readable report."""
        lines = [f"data: {self.location} ({self.layout})"]
        width = max(len("class"), *(len(name) for name in self.classes))
        total = self.total  # once: per row it made the table quadratic in the classes
        lines.append(f"{'class':<{width}}  {'images':>8}  {'share':>6}")
        for name in self.classes:
            share = self.counts[name] / total if total else 0.0
            lines.append(f"{name:<{width}}  {self.counts[name]:>8,}  {share:>6.1%}")
        lines.append(f"{'total':<{width}}  {total:>8,}")
        if self.sizes:
            common = ", ".join(f"{w}x{h} x{n:,}" for w, h, n in self.sizes[:3])
            span = f"; smallest {self.smallest[0]}x{self.smallest[1]}, largest {self.largest[0]}x{self.largest[1]}"
            lines.append(f"sizes (WxH): {common} ({self.distinct_sizes} distinct{span})")
            modes = ", ".join(f"{mode} {n:,}" for mode, n in self.modes.items())
            loads_as = "1 channel (grey content)" if self.channels == 1 else "3 channels (colour)"
            lines.append(f"stored modes: {modes} -> loads as {loads_as}")
        lines.append(f"undecodable: {len(self.undecodable):,}")
        lines.extend(f"  {source}: {reason}" for source, reason in self.undecodable[:TABLE_ROWS])
        in_groups = sum(len(group) for group in self.duplicate_groups)
        lines.append(
            f"duplicate groups: {len(self.duplicate_groups):,} ({in_groups:,} images, "
            f"{in_groups - len(self.duplicate_groups):,} removable; {self.duplicates_across_classes} across classes)"
        )
        lines.extend(f"  {' = '.join(group)}" for group in self.duplicate_groups[:TABLE_ROWS])
        hidden = max(0, len(self.duplicate_groups) - TABLE_ROWS) + max(0, len(self.undecodable) - TABLE_ROWS)
        if hidden:
            lines.append(f"  ... {hidden:,} more rows (see --json)")
        return "\n".join(lines)


def describe(path: str | Path, *, split: str | None = None, limit: int | None = None, progress: bool = False) -> DatasetSummary:
    """Scan every image at `path` (any layout load_dataset reads) and summarise it."""
    listing = list_items(path, split).limited(limit)
    facts = parallel_map(_facts, listing.items, total=len(listing.items), progress=progress, description="scanning")
    good = [(item, fact) for item, fact in zip(listing.items, facts, strict=True) if fact.error is None]
    counts = Counter(item.label for item, _ in good)
    sizes = Counter(fact.size for _, fact in good)
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    groups = [[good[i][0] for i in group] for group in group_duplicates([fact.digest for _, fact in good])]
    return DatasetSummary(
        location=listing.location,
        layout=listing.layout,
        classes=listing.classes,
        counts={name: counts[label] for label, name in enumerate(listing.classes)},
        sizes=tuple((w, h, n) for (w, h), n in sizes.most_common(MOST_COMMON_SIZES)),
        distinct_sizes=len(sizes),
        smallest=by_area[0] if by_area else None,
        largest=by_area[-1] if by_area else None,
        modes=dict(Counter(fact.mode for _, fact in good).most_common()),
        channels=(max(fact.channels for _, fact in good) if good else None),
        duplicate_groups=tuple(tuple(item.source for item in group) for group in groups),
        duplicates_across_classes=sum(len({item.label for item in group}) > 1 for group in groups),
        undecodable=tuple((item.source, fact.error) for item, fact in zip(listing.items, facts, strict=True) if fact.error),
    )
