"""Data layer: every supported layout -> one `ImageSet`; duplicates, reproducible splits, summaries.

Names are imported on first use (PEP 562), so `core.data.locations` (paths only) costs no torch
import: `purifylab --help` and input refusals stay fast. The `describe` function shares its name
with its module: import it from `core.data.describe`.
"""

from importlib import import_module

_WHERE = {
    "prepare_image": "decode",
    "DatasetSummary": "describe",
    "ImageSet": "imageset",
    "ImageSetDataset": "imageset",
    "CIFAR10_FILE": "locations",
    "MNIST_FILE": "locations",
    "XRAY_TEST_DIR": "locations",
    "XRAY_TRAIN_DIR": "locations",
    "default_data_for": "locations",
    "list_items": "sources",
    "load_dataset": "sources",
    "read_idx": "sources",
    "SplitSpec": "splits",
    "data_hash": "splits",
    "data_hash_of_folder": "splits",
    "dedupe": "splits",
    "find_duplicates": "splits",
    "make_splits": "splits",
    "stratified_split": "splits",
}

# The splits `core.data.loading` reads, declared here without torch: the CLI refuses a mistyped
# --split before the loader, and torch with it, is imported.
SPLITS = ("train", "val", "test", "all")

__all__ = sorted([*_WHERE, "SPLITS"])


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'core.data' has no attribute '{name}'")
    return getattr(import_module(f"core.data.{_WHERE[name]}"), name)
