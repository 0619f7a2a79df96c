"""Untrusted image files to float pixels in [0, 1], without torch.

The CLI refuses a bad file through this module before it imports torch (seconds on a busy machine);
`core.io.load_image` wraps it into tensors for the app and the API.

Privacy and safety rules this module keeps:
- nothing is written to disk while loading, and neither pixel data nor file names are logged or
  put into messages (a file's name is used only for its extension, to explain a mismatch);
- the format comes from the content (magic bytes), never from the extension;
- sizes are checked from the header before any pixel is decoded (decompression bombs);
- DICOM files are read with an allow-list of technical tags only (`core.dicom`), so patient tags
  (name, ID, birth date, ...) are never parsed into memory, let alone returned or echoed in errors.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps

from core.errors import PurifyLabError

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 25_000_000  # above the largest chest X-ray detectors (~15 MP), far below a bomb
MIN_SIDE = 16

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses, so DICOM colour matches other formats.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

# Errors Pillow raises for malformed or unsupported content (UnidentifiedImageError is an OSError;
# SyntaxError is how several plugins report a bad header; fuzzing showed TypeError, IndexError and
# KeyError from the GIF and TIFF plugins on cut frames and missing tags, and OverflowError from a
# TIFF whose strip offsets read as 64-bit, when Pillow seeks in an in-memory stream). `_pillow_guard`
# wraps only Pillow calls, so catching these cannot hide a bug of ours.
_PILLOW_DECODE_ERRORS = (
    OSError,
    OverflowError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    TypeError,
    IndexError,
    KeyError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

# Used only to explain a content/extension mismatch in the notes, never to pick a decoder.
_EXTENSIONS = {
    "PNG": {".png", ".apng"},
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "GIF": {".gif"},
    "BMP": {".bmp", ".dib"},
    "TIFF": {".tif", ".tiff"},
    "WEBP": {".webp"},
    "DICOM": {".dcm", ".dicom", ".dic"},
}
# What an upload field offers: every extension of a format the loader decodes.
UPLOAD_EXTENSIONS = tuple(sorted(extension for known in _EXTENSIONS.values() for extension in known))

ImageSource = bytes | bytearray | memoryview | str | PathLike | BinaryIO


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One grayscale channel as float32 (H, W) in [0, 1], finite.

    `original_size` is (width, height) as decoded (after EXIF orientation). `notes` are technical
    remarks on conversions applied; they never contain patient data.
    """

    pixels: np.ndarray
    format: str
    original_size: tuple[int, int]
    notes: tuple[str, ...] = ()


def decode_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> DecodedImage:
    """Decode PNG, JPEG, BMP, TIFF, WebP, GIF or DICOM into float32 (H, W) pixels in [0, 1].

    `source` is bytes, a path or a binary file object; `name` (defaults to the path's or the file
    object's name) is only used for its extension, to explain a content/extension mismatch.
    Any malformed, oversized, undersized or unsupported input raises `PurifyLabError`.
    Pillow's own decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`) applies too.
    """
    for label, limit in (("max_bytes", max_bytes), ("max_pixels", max_pixels)):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < MIN_SIDE**2:
            raise PurifyLabError(f"{label} must be an integer >= {MIN_SIDE**2}; got {limit!r}")
    data, name = _read_source(source, name, max_bytes)
    extension = _known_extension(name)
    image_format = _sniff_format(data)
    if image_format is None:
        raise PurifyLabError(_unrecognised_message(data, extension))
    if image_format == "DICOM":
        from core.dicom import decode_dicom  # pydicom costs its import only when a DICOM comes in

        pixels, notes = decode_dicom(data, max_pixels=max_pixels)
    else:
        pixels, notes = _decode_with_pillow(data, image_format, max_pixels=max_pixels)
    if extension and extension not in _EXTENSIONS[image_format]:
        notes = [f"content is {image_format}; the '{extension}' extension was ignored", *notes]
    pixels = _finite_unit(pixels)
    height, width = pixels.shape
    return DecodedImage(pixels=pixels, format=image_format, original_size=(width, height), notes=tuple(notes))


def _known_extension(name: str | None) -> str:
    """The name's extension if it is a known image extension; anything else might carry identifiers."""
    extension = Path(name).suffix.lower() if name else ""
    return extension if any(extension in known for known in _EXTENSIONS.values()) else ""


def _read_source(source: ImageSource, name: str | None, max_bytes: int) -> tuple[bytes, str | None]:
    """Read at most max_bytes + 1 bytes, so an oversized upload is refused without reading it all."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source[: max_bytes + 1])
    elif isinstance(source, (str, PathLike)):
        path = Path(source)
        name = name or path.name
        if is_special_file(path):
            raise PurifyLabError("image path is not a regular file (a pipe, device or socket, or a link to one); expected an image file")
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise PurifyLabError(f"image file {path} not found (check the path)") from None
        except IsADirectoryError:
            raise PurifyLabError("image path is a folder; expected an image file") from None
        except OSError as exc:
            raise PurifyLabError(f"could not read the image file: {exc.strerror or 'I/O error'}") from None
    elif hasattr(source, "read"):
        name = name or _file_object_name(source)
        data = source.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise PurifyLabError("image file object must be opened in binary mode ('rb')")
        data = bytes(data)
    else:
        raise PurifyLabError(f"image source must be bytes, a path or a binary file object; got {type(source).__name__}")
    if not data:
        raise PurifyLabError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise PurifyLabError(f"image file is larger than the {max_bytes:,}-byte limit")
    return data, name


def is_special_file(path: Path) -> bool:
    """A pipe, device or socket, or a link to one: open() on it blocks, maybe for ever, so it is
    refused before it is opened (uploads and data sets alike)."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _file_object_name(source: object) -> str | None:
    candidate = getattr(source, "name", None)
    return candidate if isinstance(candidate, str) else None


def _sniff_format(data: bytes) -> str | None:
    """Identify the container from its content; the extension is never trusted.

    The `DICM` marker comes first: a DICOM preamble is free-form and often holds a TIFF header
    (dual-personality files), so it must not be read as one. A data set with no preamble and no
    file meta is recognised by its first element, or failing that by a force-read that finds
    image-module elements (`core.dicom`); text is never force-read.
    """
    if data[128:132] == b"DICM":
        return "DICOM"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if _is_mostly_text(data[:512].lstrip()):
        return None
    from core.dicom import is_bare_dataset

    return "DICOM" if is_bare_dataset(data) else None


def _unrecognised_message(data: bytes, extension: str) -> str:
    named = f" (the name says '{extension}')" if extension else ""
    head = data[:512].lstrip()
    if head[:1] == b"<" or _is_mostly_text(head):
        return f"content looks like text or HTML, not an image{named}; upload a PNG, JPEG or DICOM file"
    return f"unrecognised image format{named}; supported: PNG, JPEG, BMP, TIFF, WebP, GIF, DICOM"


def _is_mostly_text(head: bytes) -> bool:
    if not head:
        return False
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in head)
    return printable / len(head) > 0.95


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    """Runs on header values, before any pixel is decoded (decompression bombs); data sets apply it
    too, without `check_dimensions`' minimum side, since their images may be small (MNIST is 28 px)."""
    if width * height > max_pixels:
        raise PurifyLabError(f"image is {width} x {height} = {width * height:,} pixels; the limit is {max_pixels:,}")


def check_dimensions(width: int, height: int, max_pixels: int) -> None:
    """Runs on header values, before any pixel is decoded."""
    check_pixel_count(width, height, max_pixels)
    if min(width, height) < MIN_SIDE:
        raise PurifyLabError(f"image is {width} x {height} pixels; each side must be at least {MIN_SIDE} px")


@contextmanager
def _pillow_guard(image_format: str) -> Iterator[None]:
    """Turn Pillow's errors on malformed content into one-line messages; wrap only Pillow calls."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = Image.MAX_IMAGE_PIXELS
        raise PurifyLabError(f"image declares more pixels than Pillow's {limit:,}-pixel limit (possible decompression bomb)") from None
    except MemoryError as exc:  # the file may be sound: `core.data.decode` does not cache this refusal
        raise PurifyLabError(f"could not decode the {image_format} image: not enough memory") from exc
    except _PILLOW_DECODE_ERRORS as exc:
        # Pillow names the stream it read ("cannot identify image file <_io.BytesIO object at 0x...>"): not for users
        reason = re.sub(r"\s*<[^<>]* object at 0x[0-9a-f]+>", "", " ".join(str(exc).split()))[:120] or type(exc).__name__
        raise PurifyLabError(f"could not decode the {image_format} image (truncated or corrupt): {reason}") from exc


def _decode_with_pillow(data: bytes, image_format: str, *, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    with warnings.catch_warnings():
        # Pillow warns about corrupt EXIF or TIFF tags it skips; uploads should not spam stderr.
        warnings.simplefilter("ignore")
        # It only warns for images just above its bomb limit: make that fatal too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _pillow_guard(image_format):
            image = Image.open(io.BytesIO(data), formats=[image_format])
        with image:
            check_dimensions(*image.size, max_pixels=max_pixels)
            return upright_pixels(image, image_format)


def upright_pixels(image: Image.Image, image_format: str = "", *, colour: bool = False) -> tuple[np.ndarray, list[str]]:
    """The one reading of an opened Pillow image, shared by uploads and data sets (`core.data.decode`),
    so that a model is trained and evaluated on the pixels the app shows for the same file.

    Frame 0, turned upright as its EXIF orientation says, alpha flattened on black, 16-bit and float
    scaled: float32 in [0, 1], (H, W) luminance, or with `colour` (H, W, 3) RGB when the colour
    channels differ. Pillow's errors on corrupt content become a one-line `PurifyLabError`.
    """
    with _pillow_guard(image_format):
        image.seek(0)
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        image.load()
        oriented = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
    pixels, conversion_notes = _pillow_to_unit(oriented, colour)
    with _pillow_guard(image_format):
        notes = _frames_note(image)
    if orientation in range(2, 9):
        notes.append("EXIF rotation applied")
    return _finite_unit(pixels), notes + conversion_notes


# Frames are counted this far and no further. Pillow's full count (`n_frames`) walks every TIFF page,
# each step searching a list of those already seen: 112 s for a 10 MB file of 100,000 tiny pages.
# Seeking decodes each GIF frame passed: 0.1-0.2 s a frame on a 5000 x 5000 canvas (2 shared cores).
FRAMES_COUNTED = 3


def _frames_note(image: Image.Image) -> list[str]:
    """Say that only frame 0 was used, and of how many, at a cost that does not grow with the file.

    Runs after frame 0 is converted, since seeking replaces the image's pixels.
    """
    if not getattr(image, "is_animated", False):
        return []
    for frame in range(2, FRAMES_COUNTED + 1):
        try:
            image.seek(frame)
        except EOFError:
            return [f"animated: first frame of {frame}"]
    return [f"animated: first frame of more than {FRAMES_COUNTED}"]


def _pillow_to_unit(image: Image.Image, colour: bool) -> tuple[np.ndarray, list[str]]:
    """Float pixels in [0, 1] from any Pillow mode ((H, W), or (H, W, 3) for colour kept), noting each lossy step."""
    notes = []
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        notes.append("palette expanded")
    elif image.mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK converted")

    if image.mode.startswith("I;16"):
        values = np.asarray(image)
        notes.append(_sixteen_bit_note(int(values.max(initial=0))))
        return _to_unit_float(values, 65535), notes
    if image.mode in ("I", "F"):
        return _scale_wide_values(np.asarray(image, dtype=np.float64), image.mode, notes)
    if image.mode == "LAB":
        notes.append("LAB lightness channel used")
        return _to_unit_float(np.asarray(image.getchannel("L")), 255), notes

    alpha = np.asarray(image.getchannel("A")) if image.mode in ("RGBA", "LA") else None
    colour_mode = image.mode
    kept_colour = None
    if colour_mode not in ("1", "L", "LA"):
        try:
            rgb = image.convert("RGB")
        except ValueError:
            raise PurifyLabError(f"unsupported colour mode {colour_mode}") from None
        if _channels_differ(rgb):
            if colour:
                kept_colour = _to_unit_float(np.asarray(rgb), 255)
            else:
                notes.append("colour converted to luminance")
        image = rgb
    pixels = kept_colour if kept_colour is not None else _to_unit_float(np.asarray(image if image.mode == "L" else image.convert("L")), 255)
    if alpha is not None:
        if alpha.min() == 255:
            notes.append("alpha dropped")
        else:
            weight = alpha.astype(np.float32) / np.float32(255)
            pixels *= weight[..., None] if pixels.ndim == 3 else weight
            notes.append(f"{colour_mode} flattened on black")
    return pixels, notes


TWELVE_BIT_WHITE = 4095


def _sixteen_bit_note(highest: int) -> str:
    """16-bit PNG and TIFF are read on their own scale (white = 65535, as the formats define it), so a
    file holding raw 12-bit detector values looks almost black: say so, rather than guess its white
    level (DICOM states it in BitsStored and a window; these files do not)."""
    if 0 < highest <= TWELVE_BIT_WHITE:
        return (
            f"16-bit rescaled; its values stop at {highest} (12 bits, {highest / 65535:.0%} of the 16-bit range), "
            "so it looks dark: export it scaled to 16 bits, or as DICOM"
        )
    return "16-bit rescaled"


def _to_unit_float(values: np.ndarray, white: int) -> np.ndarray:
    scaled = values.astype(np.float32)
    scaled *= np.float32(1.0 / white)
    return scaled


def _channels_differ(rgb: Image.Image) -> bool:
    red, green, blue = (np.asarray(band) for band in rgb.split())
    return not (np.array_equal(red, green) and np.array_equal(green, blue))


def _scale_wide_values(values: np.ndarray, mode: str, notes: list[str]) -> tuple[np.ndarray, list[str]]:
    """32-bit integer or float images have no fixed white level: keep float data already in
    [0, 1], min-max scale the rest (16-bit files open as I;16, never as I)."""
    if not np.isfinite(values).all():
        raise PurifyLabError("image contains NaN or Inf pixels")
    if mode == "F" and values.min() >= 0.0 and values.max() <= 1.0:
        return values, notes
    notes.append(f"{'32-bit integer' if mode == 'I' else 'floating-point'} values min-max scaled")
    return min_max(values), notes


def min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _finite_unit(pixels: np.ndarray) -> np.ndarray:
    """Last line of defence for every decoder: float32, finite, clamped against rounding."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise PurifyLabError("image contains NaN or Inf pixels")
    np.clip(pixels, 0.0, 1.0, out=pixels)
    return pixels


def check_output_png(path: str | PathLike) -> Path:
    """Refuse an output name before any compute: it must end in .png, not be a folder, and sit in an
    existing folder (so a long attack never ends in a traceback at the write)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise PurifyLabError(f"the output must be a .png file, got '{path.name}'")
    if path.is_dir():
        raise PurifyLabError(f"the output {path} is a folder; name a .png file inside it")
    if not path.parent.is_dir():
        raise PurifyLabError(f"the output folder {path.parent} does not exist; create it first")
    return path
