"""Decoding one image into the house pixel format, and doing it for many images in parallel.

`prepare_image` is the single place that turns a PIL image into uint8 (C, H, W) for the data loaders
of every layout. The pixels themselves are read by `core.image_file.upright_pixels`, the reader of
uploads too, so training, evaluation and the app see the same pixels for one file (EXIF orientation,
alpha, 16-bit and float images); this module adds only the 8-bit storage, channels and resize.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.errors import PurifyLabError
from core.image_file import MAX_PIXELS, check_pixel_count, upright_pixels

# Pillow's BILINEAR resize widens its filter when shrinking, i.e. it is antialiased (the same
# filter torchvision's Resize uses by default).
RESAMPLE = Image.Resampling.BILINEAR
# What Pillow raises for files that are not images, truncated or corrupt (upright_pixels turns
# those it meets while decoding into PurifyLabError, a ValueError); its bomb warning is raised as an
# error while `parallel_map` runs.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)

T = TypeVar("T")
R = TypeVar("R")


def check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise PurifyLabError(f"channels must be 1, 3 or None (keep grey images grey), got {channels}")


MAX_IMAGE_SIZE = 1024  # a model's input side; larger is a typo, and decoding a data set at it runs out of memory


def check_size(size: int | None) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE):
        raise PurifyLabError(f"size must be an int in [1, {MAX_IMAGE_SIZE}] (square side in pixels) or None, got {size!r}")


def _upright_bytes(image: Image.Image, channels: int | None) -> np.ndarray:
    """uint8 (H, W) grey or (H, W, 3) colour, read as uploads are read; rounding is exact for 8-bit files."""
    pixels, _ = upright_pixels(image, image.format or "", colour=channels != 1)
    return np.rint(pixels * np.float32(255)).astype(np.uint8)


def _stored(pixels: np.ndarray, channels: int | None, size: int | None) -> np.ndarray:
    """(H, W[, 3]) uint8 -> (C, size, size) uint8: grey repeated for channels=3, then resized."""
    if channels == 3 and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if size is not None and pixels.shape[:2] != (size, size):
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), RESAMPLE))
    return np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))


def prepare_image(image: Image.Image, *, channels: int | None = None, size: int | None = None) -> np.ndarray:
    """PIL image -> uint8 (C, H, W).

    channels=None keeps grey content (including RGB with equal channels) at 1 channel and colour at
    3; resizing to size x size (aspect ratio not kept) happens only when `size` is given, after the
    channel conversion. Serving resizes with `core.io.to_model_input`; see there why the two stay
    apart and how closely they agree.
    """
    check_channels(channels)
    check_size(size)
    return _stored(_upright_bytes(image, channels), channels, size)


@dataclass(frozen=True)
class Decoded:
    """One decode attempt: the pixels, or the reason it failed, plus what the file was on disk."""

    pixels: np.ndarray | None  # uint8 (C, H, W)
    original_size: tuple[int, int] | None  # (width, height) upright (after EXIF orientation), before any resize
    original_mode: str | None  # Pillow mode as stored, e.g. "RGB", "L", "I;16"
    error: str | None
    # The system refused to read the file (permissions, an I/O error, too many open files) or memory ran
    # out while Pillow decoded it: unlike a corrupt file this may pass with no change to the file's
    # size or mtime, so it is never cached.
    unreadable: bool = False


def decode(open_image: Callable[[], Image.Image], *, channels: int | None, size: int | None) -> Decoded:
    """Open and prepare one image; decoding failures are returned, not raised, so a bad file is skipped.

    The upload path's pixel limit applies, checked on the header: a small file declaring a huge image
    would otherwise cost gigabytes in each decoding thread.
    """
    check_channels(channels)
    check_size(size)
    try:
        with open_image() as image:
            check_pixel_count(*image.size, max_pixels=MAX_PIXELS)
            upright = _upright_bytes(image, channels)
            return Decoded(_stored(upright, channels, size), (upright.shape[1], upright.shape[0]), image.mode, None)
    except PurifyLabError as error:
        return Decoded(None, None, None, str(error), unreadable=isinstance(error.__cause__, MemoryError))
    except DECODE_ERRORS as error:
        unreadable = isinstance(error, OSError) and error.errno is not None  # Pillow's own OSErrors carry no errno
        return Decoded(None, None, None, f"{type(error).__name__}: {error}", unreadable)


def parallel_map(function: Callable[[T], R], items: Iterable[T], *, total: int, progress: bool, description: str) -> list[R]:
    """`function` over `items` in order on a thread pool: Pillow releases the GIL while decoding.

    Pillow's DecompressionBombWarning is an error meanwhile (`decode` skips such a file, as uploads
    refuse it), set here around the whole pool: warning filters are process-wide, and setting them
    inside each thread would race.
    """
    workers = max(1, min(8, os.cpu_count() or 1))
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=workers) as pool:
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        results = pool.map(function, items, chunksize=1)
        return list(tqdm(results, total=total, desc=description, disable=not progress, unit="img"))
