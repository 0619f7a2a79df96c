"""`ImageSet`: every data layout is loaded into this one in-memory form.

Pixels stay uint8 in memory (4x smaller than float32, so the whole 5,216-image X-ray set fits at
any training size); conversion to the float32 [0, 1] core boundary happens per item on access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import PurifyLabError


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images with where each came from and what preprocessing was applied."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]  # label i is classes[i]
    sources: tuple[str, ...]  # per item: relative path, "file.npz:train[17]", "archive.tar.gz:test/cat/0001.jpg"
    resize: int | None  # square side the images were resized to on load; None = native size
    skipped: tuple[str, ...] = field(default=())  # sources that could not be decoded and were left out

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise PurifyLabError(f"ImageSet images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        count = self.images.shape[0]
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (count,):
            raise PurifyLabError(f"ImageSet labels must be int64 of shape ({count},), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.sources) != count:
            raise PurifyLabError(f"ImageSet has {count} images but {len(self.sources)} sources")
        if count and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise PurifyLabError(f"ImageSet labels must lie in [0, {len(self.classes) - 1}] for classes {list(self.classes)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def tensor(self, index: int) -> torch.Tensor:
        """Item `index` as float32 (C, H, W) in [0, 1], the core boundary format."""
        return self.images[index].to(torch.float32).div_(255.0)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """The items at `indices`, in that order (repeats allowed)."""
        positions = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        if len(positions) and not (0 <= int(positions.min()) and int(positions.max()) < len(self)):
            raise PurifyLabError(f"subset indices must lie in [0, {len(self) - 1}]")
        return ImageSet(
            images=self.images[positions],
            labels=self.labels[positions],
            classes=self.classes,
            sources=tuple(self.sources[i] for i in positions.tolist()),
            resize=self.resize,
            skipped=self.skipped,
        )

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts, strict=True))

    def dataset(self) -> ImageSetDataset:
        """A torch Dataset view for DataLoader: (float32 (C, H, W) in [0, 1], int label)."""
        return ImageSetDataset(self)


class ImageSetDataset(Dataset):
    def __init__(self, image_set: ImageSet):
        self.image_set = image_set

    def __len__(self) -> int:
        return len(self.image_set)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image_set.tensor(index), int(self.image_set.labels[index])
