"""Where PurifyLab reads and writes, named once: data sets, results, weights, presets and caches.

Data, results, weights, training runs and the decode cache honour an environment variable and fall
back to the repository layout; an explicit command-line option (--data, --store, --out-dir, --out,
--weights) wins over both. Presets and the gallery always live in the repository. The defaults are
absolute, so a command reads and writes the same files from any working directory; a relative value
is read from the working directory the process starts in, once. An empty value counts as unset (it
would otherwise name the working directory, silently), and a PURIFYLAB_WEIGHTS that names no folder
is refused in one line (every model would otherwise read as untrained).

    PURIFYLAB_DATA     the shared data sets   (default: ../shared/data beside the repository)
    PURIFYLAB_RESULTS  results store, tables  (default: results/ in the repository)
    PURIFYLAB_WEIGHTS  shipped weights        (default: weights/ in the repository)
    PURIFYLAB_RUNS     training run folders   (default: runs/ in the repository)
    PURIFYLAB_CACHE    decoded data sets      (default: .data/cache in the repository)

The decode cache holds one .npz per data folder, image size and channel count (the X-ray train
folder takes about 86 MB at 128 px) and is never pruned: delete the folder, or any file in it, to
free the space; whatever is missing is decoded again on the next run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from core.errors import PurifyLabError


def _folder(variable: str, default: Path) -> Path:
    """The folder the environment `variable` names, absolute, or `default` when it is unset or empty."""
    value = os.environ.get(variable, "")
    return Path(value).resolve() if value.strip() else default


REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = _folder("PURIFYLAB_DATA", REPO_ROOT.parent / "shared" / "data")
RESULTS_DIR = _folder("PURIFYLAB_RESULTS", REPO_ROOT / "results")
WEIGHTS_DIR = _folder("PURIFYLAB_WEIGHTS", REPO_ROOT / "weights")
RUNS_DIR = _folder("PURIFYLAB_RUNS", REPO_ROOT / "runs")  # checkpoints, logs, unshipped results of `train`
CONFIGS_DIR = REPO_ROOT / "configs"
GALLERY_DIR = REPO_ROOT / "assets" / "gallery"
CACHE_DIR = _folder("PURIFYLAB_CACHE", REPO_ROOT / ".data" / "cache")  # decoded data sets, keyed by their sources
RESULTS_STORE = RESULTS_DIR / "results.sqlite"


def check_checkout() -> None:
    """PurifyLab runs from a clone of its repository: a wheel installs core/ alone, where every model
    would read as untrained, every preset as missing and the results store would land in site-packages.
    A PURIFYLAB_WEIGHTS naming no folder would read the same way, so it is refused in its own name."""
    if not CONFIGS_DIR.is_dir():
        raise PurifyLabError(
            f"PurifyLab runs from a clone of its repository (configs/, weights/ and assets/ beside core/; none beside {REPO_ROOT / 'core'}): "
            "install it with `pip install -e .` from the clone"
        )
    if not WEIGHTS_DIR.is_dir():
        raise PurifyLabError(
            f"the weights folder {WEIGHTS_DIR} (PURIFYLAB_WEIGHTS, default weights/ in the repository) is not a folder: "
            "point PURIFYLAB_WEIGHTS at the shipped weights or unset it"
        )


def write_new_file(path: Path, content: bytes) -> None:
    """`content` as the new file `path` (never over an existing one), synced to disk, its mode left to
    the umask as for any new file: tempfile's and safetensors' owner-only files kept a group from
    resuming a shared run."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def write_files(contents: Mapping[Path, str | bytes]) -> None:
    """Write the files whole or not at all (their folders created): each goes to a temporary file beside
    its target first, where a full disk fails, and all are renamed over their targets only once every
    one is written. A failed write leaves the earlier files as they were, never a truncated one that a
    reader (the app) or a rerun's "did purifylab write this?" check would trip on, and is one line
    naming the file."""
    staged: list[tuple[Path, Path]] = []
    target = Path()
    try:
        for target, content in ((Path(path), content) for path, content in contents.items()):
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
            staged.append((temporary, target))
            write_new_file(temporary, content.encode() if isinstance(content, str) else content)
        for temporary, target in staged:
            os.replace(temporary, target)
    except BaseException as error:
        for temporary, _ in staged:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass  # the folder may not let us remove it either
        if isinstance(error, OSError):
            raise PurifyLabError(f"cannot write {target}: {error.strerror or error}") from None
        raise
