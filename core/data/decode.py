"""Decoding one image into the house pixel format, and doing it for many images in parallel.

`prepare_image` is the single place that turns a PIL image into uint8 (C, H, W): the data loaders
use it for every layout, and single-image input can use it too so that training and inference
see identically preprocessed pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.errors import PurifyLabError

# Pillow's BILINEAR resize widens its filter when shrinking, i.e. it is antialiased (the same
# filter torchvision's Resize uses by default).
RESAMPLE = Image.Resampling.BILINEAR
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# What Pillow raises for files that are not images, truncated or corrupt.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

T = TypeVar("T")
R = TypeVar("R")


def check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise PurifyLabError(f"channels must be 1, 3 or None (keep grey images grey), got {channels}")


MAX_IMAGE_SIZE = 1024  # a model's input side; larger is a typo, and decoding a data set at it runs out of memory


def check_size(size: int | None) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE):
        raise PurifyLabError(f"size must be an int in [1, {MAX_IMAGE_SIZE}] (square side in pixels) or None, got {size!r}")


def _as_grey_or_rgb(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to "L" or "RGB"; 16-bit grey is scaled to 8 bits instead of clipped."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("1", "LA", "La", "F"):
        return image.convert("L")
    return image.convert("RGB")


def has_grey_content(image: Image.Image) -> bool:
    """True for grey modes and for RGB images whose channels are equal (X-rays saved as RGB JPEG)."""
    if image.mode == "L":
        return True
    pixels = np.asarray(image)
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


def prepare_image(image: Image.Image, *, channels: int | None = None, size: int | None = None) -> np.ndarray:
    """PIL image -> uint8 (C, H, W).

    channels=None keeps grey content at 1 channel and colour at 3; resizing to size x size (aspect
    ratio not kept) happens only when `size` is given, after the channel conversion. Serving resizes
    with `core.io.to_model_input`; see there why the two stay apart and how closely they agree.
    """
    check_channels(channels)
    check_size(size)
    image = _as_grey_or_rgb(image)
    if channels is None:
        channels = 1 if has_grey_content(image) else 3
    target_mode = "L" if channels == 1 else "RGB"
    if image.mode != target_mode:
        image = image.convert(target_mode)
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    pixels = np.asarray(image)
    return np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))


@dataclass(frozen=True)
class Decoded:
    """One decode attempt: the pixels, or the reason it failed, plus what the file was on disk."""

    pixels: np.ndarray | None  # uint8 (C, H, W)
    original_size: tuple[int, int] | None  # (width, height) as stored
    original_mode: str | None  # Pillow mode as stored, e.g. "RGB", "L", "I;16"
    error: str | None


def decode(open_image: Callable[[], Image.Image], *, channels: int | None, size: int | None) -> Decoded:
    """Open and prepare one image; decoding failures are returned, not raised, so a bad file is skipped."""
    try:
        with open_image() as image:
            image.load()
            pixels = prepare_image(image, channels=channels, size=size)
            return Decoded(pixels, image.size, image.mode, None)
    except PurifyLabError:
        raise
    except DECODE_ERRORS as error:
        return Decoded(None, None, None, f"{type(error).__name__}: {error}")


def parallel_map(function: Callable[[T], R], items: Iterable[T], *, total: int, progress: bool, description: str) -> list[R]:
    """`function` over `items` in order on a thread pool: Pillow releases the GIL while decoding."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(function, items, chunksize=1)
        return list(tqdm(results, total=total, desc=description, disable=not progress, unit="img"))
