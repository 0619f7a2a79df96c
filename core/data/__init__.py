"""Data layer: every supported layout -> one `ImageSet`; duplicates, reproducible splits, summaries."""

from core.data.cache import REPO_CACHE_DIR
from core.data.decode import prepare_image
from core.data.describe import DatasetSummary, describe
from core.data.imageset import ImageSet, ImageSetDataset
from core.data.locations import CIFAR10_FILE, MNIST_FILE, XRAY_TRAIN_DIR, default_data_for
from core.data.sources import list_items, load_dataset, read_idx
from core.data.splits import (
    SplitSpec,
    data_hash,
    data_hash_of_folder,
    dedupe,
    find_duplicates,
    make_splits,
    stratified_split,
)

__all__ = [
    "CIFAR10_FILE",
    "MNIST_FILE",
    "XRAY_TRAIN_DIR",
    "default_data_for",
    "REPO_CACHE_DIR",
    "DatasetSummary",
    "ImageSet",
    "ImageSetDataset",
    "SplitSpec",
    "data_hash",
    "data_hash_of_folder",
    "dedupe",
    "describe",
    "find_duplicates",
    "list_items",
    "load_dataset",
    "make_splits",
    "prepare_image",
    "read_idx",
    "stratified_split",
]
