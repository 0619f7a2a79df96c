"""Optional on-disk cache of decoded pixels, so repeated training runs skip JPEG decoding.

Entries are plain .npz files read with allow_pickle=False (no code can run on load). The key is a
hash of the backing files (path, byte size, mtime), the item list and the load options: editing,
adding or removing a file, or asking for another size, gives a new key. A set in which the system
refused to read a file is not cached (`Decoded.unreadable`), and a cache that cannot be written is
only warned about: it saves time, it holds nothing the data does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from core.data.imageset import ImageSet
from core.data.warning import warn

if TYPE_CHECKING:
    from core.data.sources import Listing

# 2: pixels read by core.image_file.upright_pixels (EXIF orientation, alpha flattened, 16-bit and float as uploads)
# 3: images over the upload pixel limit skipped, and no set with a file the system refused to read
#    (an entry of 2 may keep such a file left out for good)
CACHE_FORMAT = 3


def _file_identity(path: Path) -> list:
    """[resolved path, size, mtime]; a broken link or a link loop (listed, then skipped as undecodable)
    has none, so it reads [path, -1, -1] until it is mended."""
    try:
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's resolve() on a link loop
        return [str(path.absolute()), -1, -1]


def cache_key(listing: Listing, *, size: int | None, channels: int | None) -> str:
    files = [_file_identity(path) for path in listing.backing_files]
    description = {
        "format": CACHE_FORMAT,
        "layout": listing.layout,
        "location": listing.location,
        "classes": listing.classes,
        "files": files,
        # surrogateescape: a file name that is not UTF-8 keys as its bytes; valid names keep their keys
        "items": hashlib.sha256("\n".join(item.source for item in listing.items).encode("utf-8", "surrogateescape")).hexdigest(),
        "size": size,
        "channels": channels,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def read_cache(cache_dir: Path, listing: Listing, *, size: int | None, channels: int | None) -> ImageSet | None:
    """The cached ImageSet, or None when absent or unreadable (it is then simply rebuilt)."""
    path = cache_dir / f"{cache_key(listing, size=size, channels=channels)}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            resize = int(entry["resize"])
            return ImageSet(
                images=torch.from_numpy(entry["images"]),
                labels=torch.from_numpy(entry["labels"]),
                classes=tuple(str(c) for c in entry["classes"]),
                sources=tuple(str(s) for s in entry["sources"]),
                resize=None if resize < 0 else resize,
                skipped=tuple(str(s) for s in entry["skipped"]),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def write_cache(cache_dir: Path, listing: Listing, image_set: ImageSet, *, size: int | None, channels: int | None) -> Path | None:
    """The entry written, or None with a warning when `cache_dir` cannot take it (read-only checkout,
    full disk): the pixels are already decoded, and the run goes on without the cache."""
    path = cache_dir / f"{cache_key(listing, size=size, channels=channels)}.npz"
    partial_path = path.with_suffix(f".{os.getpid()}.partial")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(partial_path, "wb") as handle:
            np.savez(
                handle,
                images=image_set.images.numpy(),
                labels=image_set.labels.numpy(),
                classes=np.array(image_set.classes, dtype=str),
                sources=np.array(image_set.sources, dtype=str),
                skipped=np.array(image_set.skipped, dtype=str),
                resize=np.int64(-1 if image_set.resize is None else image_set.resize),
            )
        os.replace(partial_path, path)  # atomic: a concurrent reader never sees half a file
    except OSError as error:
        with contextlib.suppress(OSError):  # the folder may not let us remove it either
            partial_path.unlink(missing_ok=True)
        warn(f"decode cache not written to {cache_dir}: {error.strerror or error}; the next run decodes again")
        return None
    return path
