"""Where the development data sets sit (../shared/data beside the repository), named once.

The X-ray set is the product's; MNIST and CIFAR-10 are the DiffDefense and Blau et al. papers' own
settings, used only by models and presets whose names start with `mnist` / `cifar10`.
"""

from __future__ import annotations

from pathlib import Path

SHARED_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
XRAY_TRAIN_DIR = SHARED_DATA_DIR / "chest_xray_pneumonia" / "train"
MNIST_FILE = SHARED_DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz"
CIFAR10_FILE = SHARED_DATA_DIR / "cifar10_test_jpeg_q75" / "cifar10_test_jpegs.tar.gz"


def default_data_for(name: str) -> Path:
    """The data set a model or training preset is trained on by default, from its name."""
    if name.startswith("mnist"):
        return MNIST_FILE
    if name.startswith("cifar10"):
        return CIFAR10_FILE
    return XRAY_TRAIN_DIR
