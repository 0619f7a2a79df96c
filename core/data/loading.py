"""The project's split of a data folder, loaded: what trainers, evaluation and tables all read.

A folder of patients (the Kermany train folder, whose test cohort is a folder of its own) is cut
by patient into train 85 % / val 15 %: validation is where epochs, thresholds, temperatures and t*
are chosen, and the separate test folder, read whole as split "all", is where figures are reported.
The papers' MNIST and CIFAR-10 sets, single images carved from one test set, keep 80/10/10.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data import SPLITS
from core.data.decode import check_channels, check_size
from core.data.groups import ONE_GROUP_PER_IMAGE, Grouping, group_images
from core.data.imageset import ImageSet
from core.data.locations import default_data_for
from core.data.sources import SplitsInData, data_listing, images_also_in, load_dataset
from core.data.splits import SplitSpec, data_hash, make_splits
from core.data.warning import warn
from core.errors import PurifyLabError
from core.paths import CACHE_DIR

SPLIT_SEED = 0
PATIENT_FRACTIONS = {"val": 0.15, "test": 0.0}
IMAGE_FRACTIONS = {"val": 0.1, "test": 0.1}
TRAINED_SPLITS = {
    "train": "split train is the part of it the model was trained on",
    "all": "split all, read whole, holds every image the model was trained on (split train) or chose on (split val)",
}
"""The splits of a model's own training data that are no new data to it, in a warning's words."""


@dataclass(frozen=True)
class LoadedSplit:
    images: torch.Tensor  # uint8 (N, C, S, S); `floats()` gives the [0, 1] core boundary
    labels: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]
    data_hash: str  # of the whole folder the split was cut from
    split: str
    sources: tuple[str, ...] = ()
    cut: str = ""  # how the folder was split, in words (cards quote it)
    skipped: int = 0  # files of the folder that could not be decoded and were left out of every split

    def floats(self) -> torch.Tensor:
        """The images as float32 in [0, 1], NCHW."""
        return self.images.float().div(255.0)

    def describe(self, folder: str | Path) -> dict:
        """Which images a figure comes from, in words a reader can check."""
        from core.data.locations import portable_path

        described = {"folder": portable_path(folder), "split": self.split, "n": int(len(self.labels)), "data_hash": self.data_hash}
        return described | ({"undecodable_skipped": self.skipped} if self.skipped else {})


def content_hash(data_dir: str | Path, split: str | None = None) -> str:
    """sha256 over the bytes of the files a data set is read from, each by its name under `data_dir`.

    `data_hash` names the images, so a copy of a data set elsewhere keeps it and a results store
    serves any checkout; two data sets with the same file names and other images share it too. This
    tells them apart. Bytes, not decoded pixels: another decoder version may move a pixel by a grey
    level, and the same files must keep one hash on every machine."""
    root = Path(data_dir).expanduser()
    digest = hashlib.sha256()
    for file in sorted(data_listing(root, split).backing_files):
        name = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        try:  # a link to a pipe or device would block a read; the loader skips it, and so does this hash
            digest.update(hashlib.sha256(file.read_bytes()).digest() if file.is_file() else b"not a regular file")
        except OSError:  # unreadable: the loader leaves it out as undecodable, and so does this hash
            digest.update(b"unreadable")
    return digest.hexdigest()


def resolve_split(folder: str | Path, split: str | None, card: dict | None) -> str:
    """`split`, or when None: "val" if `folder` is the one the card's model was trained on (never
    read its training images), else "all". The card's `data_hash` names the images that decoded;
    its `listed_hash`, every file listed, so a training folder holding an undecodable file is known
    by its list too (cards written before it have none: their folders decoded whole)."""
    from core.data.splits import data_hash_of_folder

    data = (card or {}).get("data") or {}
    trained_on = {data.get("data_hash"), data.get("listed_hash")} - {None}
    name = (card or {}).get("name")
    try:
        listed = data_hash_of_folder(folder)
    except SplitsInData:
        if split is None:
            raise
        _warn_training_images(folder, split, name)  # a split folder may hold the training images as well
        return split  # data with splits of its own is read one split whole, never carved
    if listed in trained_on:
        if split in TRAINED_SPLITS:
            warn(f"{folder} is the data {name} was trained on, and {TRAINED_SPLITS[split]}: figures on it are not figures on new data")
        return split or "val"
    _warn_training_images(folder, None, name)
    return split or "all"


def _warn_training_images(folder: str | Path, split: str | None, name: str | None) -> None:
    """A copy or a subset of the folder a model was trained on is not that folder, so it is read as
    new data: say so when its images (those of `split`, where it holds split folders) are that
    folder's (its default training set, a folder or a file)."""
    if name is None or not default_data_for(name).exists():
        return
    reference = default_data_for(name)
    shared = images_also_in(folder, reference, split)
    if shared.sources:
        where = f"{folder} (split {split})" if split else str(folder)
        kind = "folder" if reference.is_dir() else "file"
        warn(
            f"{len(shared.sources)} of the {shared.listed} images of {where} are, {shared.how}, images of the {kind} {name} was trained on "
            f"({reference}, e.g. {shared.sources[0]}): figures on them read images it learnt from or chose on, not new data"
        )


def project_fractions(grouping: Grouping) -> dict[str, float]:
    """The val and test fractions of the project split: by image 80/10/10, else by patient 85/15."""
    return IMAGE_FRACTIONS if grouping.rule == ONE_GROUP_PER_IMAGE else PATIENT_FRACTIONS


def project_split(image_set: ImageSet, grouping: Grouping) -> SplitSpec:
    """The one split used across the project (seed 0): by patient where patients are known."""
    fractions = project_fractions(grouping)
    return make_splits(image_set, val=fractions["val"], test=fractions["test"], seed=SPLIT_SEED, grouping=grouping)


def describe_cut(grouping: Grouping) -> str:
    """`project_split` in words: by patient (val only; the test cohort is its own folder), or by image."""
    if grouping.rule == ONE_GROUP_PER_IMAGE:
        return f"deduplicated; by image, stratified, val {IMAGE_FRACTIONS['val']:.0%}, test {IMAGE_FRACTIONS['test']:.0%} (core.data.loading)"
    return f"deduplicated; by patient, stratified, val {PATIENT_FRACTIONS['val']:.0%} (core.data.loading)"


def load_splits(
    data_dir: str | Path,
    splits: tuple[str, ...],
    image_size: int,
    limit: int | None = None,
    progress: bool = False,
    *,
    channels: int = 1,
) -> dict[str, LoadedSplit]:
    """Images of splits of the project split ("all" = every image), resized explicitly to image_size,
    as `channels` (1 = grey, 3 = RGB). Data that holds splits of its own (a MedMNIST .npz, split
    folders) is read one split at a time: the requested one, whole.

    The folder is decoded once for all requested splits; `limit` keeps N evenly spaced images of
    each split, so a limited run sees a class-balanced-as-the-split subset of the same split.
    """
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise PurifyLabError(f"split '{unknown[0]}' is unknown; choose one of: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise PurifyLabError(f"limit must be a positive number of images, got {limit}")
    check_size(image_size)  # before the listing: a typo is named as such, whatever the data
    check_channels(channels)
    own = None  # a split the data holds itself (a MedMNIST .npz, split folders): read whole
    try:
        image_set = load_dataset(data_dir, size=image_size, channels=channels, progress=progress, cache_dir=CACHE_DIR)
    except SplitsInData as error:
        if len(splits) != 1 or splits[0] not in error.available:
            raise
        own = splits[0]
        image_set = load_dataset(data_dir, split=own, size=image_size, channels=channels, progress=progress, cache_dir=CACHE_DIR)
    if own:
        spec, cut = None, f"the data's own '{own}' split, whole"
    else:
        grouping = group_images(image_set.sources, data_dir)
        spec, cut = project_split(image_set, grouping), describe_cut(grouping)
    whole_hash = data_hash(image_set) if spec is None else spec.data_hash
    loaded = {}
    for split in splits:
        indices = np.arange(len(image_set)) if spec is None or split == "all" else np.asarray(spec.indices[split])
        if limit is not None and limit < indices.size:
            # Evenly spaced through the (class-ordered) split, so a limited subset keeps both classes.
            indices = indices[np.linspace(0, indices.size - 1, limit).round().astype(np.int64)]
        if indices.size == 0:
            hint = "; a patient folder is cut train/val only: evaluate a separate test folder with split 'all'" if split == "test" else ""
            raise PurifyLabError(f"split '{split}' of {data_dir} holds no images{hint}")
        subset = image_set.subset(indices)
        loaded[split] = LoadedSplit(subset.images, subset.labels, subset.classes, whole_hash, split, subset.sources, cut, len(image_set.skipped))
    return loaded


def load_split(data_dir: str | Path, split: str, image_size: int, limit: int | None = None, progress: bool = False, *, channels: int = 1) -> LoadedSplit:
    return load_splits(data_dir, (split,), image_size, limit, progress, channels=channels)[split]
