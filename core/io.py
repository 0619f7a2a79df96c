"""Image input and output shared by the app and the CLI.

Everything that reaches the models passes through here, so this is where untrusted uploads are
turned into float32 grayscale tensors in [0, 1] or refused with a one-line `PurifyLabError`.

Privacy and safety rules this module keeps:
- nothing is written to disk while loading, and neither pixel data nor file names are logged or
  put into messages (a file's name is used only for its extension, to explain a mismatch);
- the format comes from the content (magic bytes), never from the extension;
- sizes are checked from the header before any pixel is decoded (decompression bombs);
- DICOM files are read with an allow-list of technical tags only, so patient tags (name, ID,
  birth date, ...) are never parsed into memory, let alone returned or echoed in errors.
"""

from __future__ import annotations

import io
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
import pydicom
import pydicom.errors
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core.errors import PurifyLabError

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 25_000_000  # above the largest chest X-ray detectors (~15 MP), far below a bomb
MIN_SIDE = 16
RANGE_TOLERANCE = 1e-6

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses, so DICOM colour matches other formats.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

# Errors Pillow raises for malformed or unsupported content (UnidentifiedImageError is an OSError;
# SyntaxError is how several plugins report a bad header; fuzzing showed TypeError, IndexError and
# KeyError from the GIF and TIFF plugins on cut frames and missing tags). `_pillow_guard` wraps only
# Pillow calls, so catching these cannot hide a bug of ours.
_PILLOW_DECODE_ERRORS = (
    OSError,
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

# Errors pydicom raises for malformed datasets or pixel data it cannot decode (values are parsed
# lazily, so a bad length surfaces on first access). `_dicom_guard` wraps only pydicom calls.
_DICOM_DECODE_ERRORS = (
    pydicom.errors.InvalidDicomError,
    pydicom.errors.BytesLengthException,
    ValueError,
    RuntimeError,
    NotImplementedError,
    OSError,
    EOFError,
    struct.error,
    KeyError,
    AttributeError,
    TypeError,
    IndexError,
    OverflowError,
)

# The only DICOM elements ever read: enough to decode and display the first frame.
_DICOM_TECHNICAL_TAGS = [
    "SpecificCharacterSet",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "PixelData",
]
# Meta, identifying, patient, acquisition, relationship and image-pixel groups: whichever of these
# the lowest tag of a data set belongs to, it comes first in a preamble-less file.
_DICOM_FIRST_GROUPS = (0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028)
_DICOM_PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DICOM_REQUIRED = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation")

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

ImageSource = bytes | bytearray | memoryview | str | PathLike | BinaryIO


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded image ready for the core: one grayscale channel, float32 in [0, 1].

    `original_size` is (width, height) of `pixels` as loaded (after EXIF orientation, before any
    model resize), so callers can record or undo the explicit resize of `to_model_input`.
    `notes` are technical remarks on conversions applied; they never contain patient data.
    """

    pixels: torch.Tensor
    format: str
    original_size: tuple[int, int]
    notes: tuple[str, ...] = ()


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> LoadedImage:
    """Decode PNG, JPEG, BMP, TIFF, WebP, GIF or DICOM into a (1, H, W) float32 tensor in [0, 1].

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
        pixels, notes = _decode_dicom(data, max_pixels=max_pixels)
    else:
        pixels, notes = _decode_with_pillow(data, image_format, max_pixels=max_pixels)
    if extension and extension not in _EXTENSIONS[image_format]:
        notes = [f"content is {image_format}; the '{extension}' extension was ignored", *notes]
    tensor = _finite_unit_tensor(pixels)
    height, width = tensor.shape[-2:]
    return LoadedImage(
        pixels=tensor, format=image_format, original_size=(width, height), notes=tuple(notes)
    )


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
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise PurifyLabError("image file not found (check the path)") from None
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
        raise PurifyLabError(
            f"image source must be bytes, a path or a binary file object; got {type(source).__name__}"
        )
    if not data:
        raise PurifyLabError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise PurifyLabError(f"image file is larger than the {max_bytes:,}-byte limit")
    return data, name


def _file_object_name(source: object) -> str | None:
    candidate = getattr(source, "name", None)
    return candidate if isinstance(candidate, str) else None


def _sniff_format(data: bytes) -> str | None:
    """Identify the container from its magic bytes; the extension is never trusted."""
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
    if data[128:132] == b"DICM" or _looks_like_preambleless_dicom(data):
        return "DICOM"
    return None


def _looks_like_preambleless_dicom(data: bytes) -> bool:
    """A raw little-endian data set starts with an element of a low standard group and a sane VR or length.

    Only then is pydicom asked to force-read it, so arbitrary bytes never go through force=True.
    """
    if len(data) < 8:
        return False
    group, element = struct.unpack_from("<HH", data)
    if group not in _DICOM_FIRST_GROUPS or element > 0x00FF:
        return False
    explicit_vr = data[4:6]
    if explicit_vr.isalpha() and explicit_vr.isupper():
        return True
    (implicit_length,) = struct.unpack_from("<I", data, 4)
    return implicit_length < min(len(data), 1024)


def _unrecognised_message(data: bytes, extension: str) -> str:
    named = f" (the name says '{extension}')" if extension else ""
    head = data[:512].lstrip()
    if head[:1] == b"<" or _is_mostly_text(head):
        return f"content looks like text or HTML, not an image{named}; upload a PNG, JPEG or DICOM file"
    return (
        f"unrecognised image format{named}; supported: PNG, JPEG, BMP, TIFF, WebP, GIF, DICOM"
    )


def _is_mostly_text(head: bytes) -> bool:
    if not head:
        return False
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in head)
    return printable / len(head) > 0.95


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    """Runs on header values, before any pixel is decoded."""
    if width * height > max_pixels:
        raise PurifyLabError(
            f"image is {width} x {height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )
    if min(width, height) < MIN_SIDE:
        raise PurifyLabError(
            f"image is {width} x {height} pixels; each side must be at least {MIN_SIDE} px"
        )


@contextmanager
def _pillow_guard(image_format: str) -> Iterator[None]:
    """Turn Pillow's errors on malformed content into one-line messages; wrap only Pillow calls."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = Image.MAX_IMAGE_PIXELS
        raise PurifyLabError(
            f"image declares more pixels than Pillow's {limit:,}-pixel limit (possible decompression bomb)"
        ) from None
    except _PILLOW_DECODE_ERRORS as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise PurifyLabError(
            f"could not decode the {image_format} image (truncated or corrupt): {reason}"
        ) from exc


def _decode_with_pillow(data: bytes, image_format: str, *, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    with warnings.catch_warnings():
        # Pillow warns about corrupt EXIF or TIFF tags it skips; uploads should not spam stderr.
        warnings.simplefilter("ignore")
        # It only warns for images just above its bomb limit: make that fatal too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _pillow_guard(image_format):
            image = Image.open(io.BytesIO(data), formats=[image_format])
        with image:
            _check_dimensions(*image.size, max_pixels=max_pixels)
            with _pillow_guard(image_format):
                frame_count = getattr(image, "n_frames", 1)
                image.seek(0)
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
                image.load()
                oriented = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
            pixels, conversion_notes = _pillow_to_luminance(oriented)
    notes = [f"animated: first frame of {frame_count}"] if frame_count > 1 else []
    if orientation in range(2, 9):
        notes.append("EXIF rotation applied")
    return pixels, notes + conversion_notes


def _pillow_to_luminance(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """One float luminance channel in [0, 1] from any Pillow mode, noting each lossy step."""
    notes = []
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        notes.append("palette expanded")
    elif image.mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK converted")

    if image.mode.startswith("I;16"):
        notes.append("16-bit rescaled")
        return _to_unit_float(np.asarray(image), 65535), notes
    if image.mode in ("I", "F"):
        return _scale_wide_values(np.asarray(image, dtype=np.float64), image.mode, notes)
    if image.mode == "LAB":
        notes.append("LAB lightness channel used")
        return _to_unit_float(np.asarray(image.getchannel("L")), 255), notes

    alpha = np.asarray(image.getchannel("A")) if image.mode in ("RGBA", "LA") else None
    colour_mode = image.mode
    if colour_mode not in ("1", "L", "LA"):
        try:
            rgb = image.convert("RGB")
        except ValueError:
            raise PurifyLabError(f"unsupported colour mode {colour_mode}") from None
        if _channels_differ(rgb):
            notes.append("colour converted to luminance")
        image = rgb
    luminance = _to_unit_float(np.asarray(image if image.mode == "L" else image.convert("L")), 255)
    if alpha is not None:
        if alpha.min() == 255:
            notes.append("alpha dropped")
        else:
            luminance *= alpha.astype(np.float32) / np.float32(255)
            notes.append(f"{colour_mode} flattened on black")
    return luminance, notes


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
    return _min_max(values), notes


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


@contextmanager
def _dicom_guard(problem: str) -> Iterator[None]:
    """Turn pydicom's errors into `problem`; wrap only pydicom calls.

    Pydicom's own messages are dropped and the exception is not chained, because they may quote
    element values: no patient data can reach a message, traceback or log through this path.
    """
    try:
        yield
    except _DICOM_DECODE_ERRORS:
        raise PurifyLabError(problem) from None


def _decode_dicom(data: bytes, *, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """First frame of a DICOM image, displayed as a viewer would: modality LUT, VOI, MONOCHROME1."""
    has_preamble = data[128:132] == b"DICM"
    with warnings.catch_warnings():
        # pydicom warns about odd values by quoting them; those warnings must not reach stderr.
        warnings.simplefilter("ignore")
        with _dicom_guard("could not parse the DICOM file (truncated or corrupt)"):
            dataset = pydicom.dcmread(
                io.BytesIO(data), force=not has_preamble, specific_tags=_DICOM_TECHNICAL_TAGS
            )
        if not any(element in dataset for element in _DICOM_PIXEL_ELEMENTS):
            raise PurifyLabError("DICOM file has no pixel data (no PixelData element)")
        missing = [keyword for keyword in _DICOM_REQUIRED if keyword not in dataset]
        if missing:
            raise PurifyLabError(f"DICOM image module is incomplete: missing {', '.join(missing)}")
        with _dicom_guard("DICOM image module has invalid Rows, Columns or NumberOfFrames"):
            width, height = int(dataset.Columns), int(dataset.Rows)
            frame_count = int(dataset.get("NumberOfFrames") or 1)
            photometric = str(dataset.PhotometricInterpretation).strip().upper()
        _check_dimensions(width, height, max_pixels=max_pixels)
        with _dicom_guard("DICOM file meta has an invalid transfer syntax"):
            transfer_syntax = _transfer_syntax(dataset)
        _require_decoder(transfer_syntax)
        with _dicom_guard("could not decode the DICOM pixel data (truncated or corrupt)"):
            frame = pixel_array(dataset, index=0)
        if frame.shape[:2] != (height, width):
            raise PurifyLabError("DICOM pixel data do not match Rows/Columns")
        notes = [f"DICOM multi-frame: first frame of {frame_count}"] if frame_count > 1 else []
        if photometric in ("MONOCHROME1", "MONOCHROME2") and frame.ndim == 2:
            pixels = _dicom_monochrome(frame, dataset, photometric, notes)
        else:
            pixels = _dicom_colour(frame, dataset, photometric, notes)
    return pixels, notes


def _transfer_syntax(dataset: pydicom.Dataset) -> UID:
    """The dataset's transfer syntax; preamble-less files often lack one, so record what pydicom read."""
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is None:
        file_meta = dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in file_meta:
        implicit_vr, little_endian = dataset.original_encoding
        if implicit_vr:
            file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    return UID(str(file_meta.TransferSyntaxUID))


def _require_decoder(transfer_syntax: UID) -> None:
    """Name the transfer syntax and the missing plugin instead of failing deep inside pydicom."""
    if not transfer_syntax.is_valid:
        raise PurifyLabError("DICOM file meta has an invalid transfer syntax UID")
    label = f"{transfer_syntax.name} ({transfer_syntax})"
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise PurifyLabError(f"DICOM transfer syntax {label} is not supported") from None
    if not decoder.is_available:
        plugins = ", ".join(dep.split(" - ")[0] for dep in decoder.missing_dependencies)
        raise PurifyLabError(
            f"DICOM pixel data use {label}, which cannot be decoded here; it needs one of: {plugins}"
        )


def _dicom_monochrome(frame: np.ndarray, dataset: pydicom.Dataset, photometric: str, notes: list[str]) -> np.ndarray:
    with _dicom_guard("could not apply the DICOM modality LUT or rescale (invalid elements)"):
        values = apply_modality_lut(frame, dataset)
        if dataset.get("ModalityLUTSequence"):
            notes.append("DICOM modality LUT applied")
        elif (dataset.get("RescaleSlope", 1), dataset.get("RescaleIntercept", 0)) != (1, 0):
            notes.append("DICOM rescale slope/intercept applied")
    has_window = "WindowCenter" in dataset and "WindowWidth" in dataset
    with _dicom_guard("could not apply the DICOM VOI LUT or window (invalid elements)"):
        has_voi_lut = bool(dataset.get("VOILUTSequence"))
    if has_voi_lut or has_window:
        with _dicom_guard("could not apply the DICOM VOI LUT or window (invalid elements)"):
            windowed = apply_voi_lut(values, dataset, index=0)
            low, high = _voi_output_range(dataset, has_voi_lut)
            if has_window and not has_voi_lut:
                centre, width = _first_value(dataset.WindowCenter), _first_value(dataset.WindowWidth)
        if not high > low:
            raise PurifyLabError("DICOM VOI LUT or window maps all values to one level")
        pixels = np.clip((windowed - float(low)) / (float(high) - float(low)), 0.0, 1.0)
        notes.append("DICOM VOI LUT applied" if has_voi_lut else f"DICOM window {centre:g}/{width:g} applied")
    else:
        if not np.isfinite(values).all():
            raise PurifyLabError("image contains NaN or Inf pixels")
        pixels = _min_max(values.astype(np.float64))
        notes.append("DICOM values min-max scaled")
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
        notes.append("DICOM MONOCHROME1 inverted")
    return pixels


def _voi_output_range(dataset: pydicom.Dataset, has_voi_lut: bool) -> tuple[float, float]:
    """Output levels that mean black and white, found by running pydicom's own VOI transform.

    A VOI LUT's entries are display levels, so its darkest and brightest entries bound the output
    (descriptors often claim 16 bits for 12-bit data). A window maps anything below it to black and
    anything above it to white, whatever bit depth and rescale pydicom derives its range from.
    """
    if has_voi_lut:
        entries, first_mapped = dataset.VOILUTSequence[0].LUTDescriptor[:2]
        levels = apply_voi_lut(np.arange(first_mapped, first_mapped + (entries or 2**16)), dataset, index=0)
        return float(levels.min()), float(levels.max())
    below, above = apply_voi_lut(np.array([-1e300, 1e300]), dataset, index=0)
    return float(below), float(above)


def _first_value(value: object) -> float:
    return float(value[0]) if isinstance(value, (list, tuple, MultiValue)) else float(value)


def _dicom_colour(frame: np.ndarray, dataset: pydicom.Dataset, photometric: str, notes: list[str]) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        with _dicom_guard("could not apply the DICOM palette (invalid lookup table elements)"):
            frame = apply_color_lut(frame, dataset)
        notes.append("palette expanded")
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype.kind not in "ui":
        raise PurifyLabError(f"DICOM photometric interpretation {photometric} is not supported")
    notes.append("colour converted to luminance")
    rgb = frame.astype(np.float64) / np.iinfo(frame.dtype).max
    return rgb @ _LUMA_WEIGHTS


def _finite_unit_tensor(pixels: np.ndarray) -> torch.Tensor:
    """Last line of defence for every decoder: float32, finite, clamped against rounding."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise PurifyLabError("image contains NaN or Inf pixels")
    np.clip(pixels, 0.0, 1.0, out=pixels)
    return torch.from_numpy(pixels).unsqueeze(0)


def validate_image_tensor(x: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """The check every core entry point runs: NCHW float, `channels` channels, finite, in [0, 1].

    Values up to 1e-6 outside [0, 1] (rounding in resizes and attacks) are clamped; anything
    further out is refused, because it means the caller used another scale (0-255, normalised).
    Returns a float32 tensor (autograd is kept).
    """
    if not isinstance(x, torch.Tensor):
        raise PurifyLabError(f"image must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 4:
        raise PurifyLabError(f"image must be 4-D (N, C, H, W); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise PurifyLabError(
            f"image dtype is {x.dtype}; expected float32 in [0, 1] (divide 8-bit images by 255)"
        )
    if x.shape[1] != channels:
        raise PurifyLabError(f"image has {x.shape[1]} channels; expected {channels}")
    if x.numel() == 0:
        raise PurifyLabError(f"image is empty; got shape {tuple(x.shape)}")
    x = x.float()
    values = x.detach()
    if not torch.isfinite(values).all():
        raise PurifyLabError("image contains NaN or Inf pixels")
    low, high = values.min().item(), values.max().item()
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise PurifyLabError(f"image values span [{low:.4g}, {high:.4g}]; expected [0, 1]")
    return x.clamp(0.0, 1.0)


def _as_batch_of_one(image: LoadedImage | torch.Tensor) -> torch.Tensor:
    """(H, W), (1, H, W) or (1, 1, H, W) -> validated (1, 1, H, W)."""
    tensor = image.pixels if isinstance(image, LoadedImage) else image
    if not isinstance(tensor, torch.Tensor):
        raise PurifyLabError(f"image must be a LoadedImage or a torch.Tensor; got {type(image).__name__}")
    if tensor.ndim == 2:
        tensor = tensor[None, None]
    elif tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[0] != 1:
        raise PurifyLabError(
            f"expected one image shaped (H, W), (1, H, W) or (1, 1, H, W); got {tuple(tensor.shape)}"
        )
    return validate_image_tensor(tensor, channels=1)


def to_model_input(image: LoadedImage | torch.Tensor, size: int) -> torch.Tensor:
    """Resize to the model's square input: (1, 1, size, size) float32 in [0, 1].

    The aspect ratio is NOT kept: the Kermany X-rays were already squashed to 224 x 224 this way,
    so padding or cropping here would show the models a geometry they were never trained on.
    Antialiased bilinear keeps downscaling from aliasing fine rib and lung texture.

    Data sets are resized by `core.data.decode.prepare_image` (Pillow, on the stored 8-bit pixels,
    cached): what every shipped card and table cell was measured on. Both are antialiased bilinear
    and agree to within one 8-bit grey level (tests/test_io.py); this one stays separate because it
    resizes the decoded float image, so 16-bit DICOM keeps its precision, and moving the data sets
    onto it would change the shipped figures.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise PurifyLabError(f"size must be a positive integer; got {size!r}")
    batch = _as_batch_of_one(image)
    if batch.shape[-2:] == (size, size):
        return batch.clone()
    resized = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.clamp(0.0, 1.0)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """8-bit grayscale ("L") image from (H, W), (1, H, W) or (1, 1, H, W) in [0, 1], rounded."""
    batch = _as_batch_of_one(tensor)
    values = (batch[0, 0].detach().cpu() * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(values)


def encode_png(tensor: torch.Tensor) -> bytes:
    """PNG bytes of an image tensor (for downloads in the app)."""
    buffer = io.BytesIO()
    to_pil(tensor).save(buffer, format="PNG")
    return buffer.getvalue()


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


def save_image(tensor: torch.Tensor, path: str | PathLike) -> Path:
    """Write an image tensor as an 8-bit grayscale PNG; the name must end in .png."""
    path = check_output_png(path)
    path.write_bytes(encode_png(tensor))
    return path
