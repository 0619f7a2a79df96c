"""DICOM as a hospital exports it: the first frame, displayed as a viewer would.

Any transfer syntax pydicom has a decoder plugin for loads (python-gdcm, pylibjpeg with its openjpeg
and rle plugins, and pyjpegls are dependencies; 12-bit JPEG extended needs the GPL-3.0 libjpeg plugin
of the `dicom-gpl` extra); the modality LUT or rescale, the VOI LUT or window and
MONOCHROME1 inversion are applied as a viewer would. Only an allow-list of technical tags is ever
parsed, so patient tags never reach memory, messages or logs.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pydicom
import pydicom.errors
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGExtended12Bit

from core.errors import PurifyLabError
from core.image_file import LUMA_WEIGHTS, check_dimensions, min_max

# Errors pydicom raises for malformed datasets or pixel data it cannot decode (values are parsed
# lazily, so a bad length surfaces on first access). `_dicom_guard` wraps only pydicom calls.
_DECODE_ERRORS = (
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
_TECHNICAL_TAGS = [
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
_FIRST_GROUPS = (0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028)
_PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REQUIRED = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation")
# Any of these in a force-read data set makes it an image DICOM rather than arbitrary bytes.
_IMAGE_ELEMENTS = (*_PIXEL_ELEMENTS, *_REQUIRED)


def is_bare_dataset(data: bytes) -> bool:
    """A data set with neither preamble nor file meta, as some exporters write them.

    Either its first element is of a low standard group with a sane VR or length (little or big
    endian), or pydicom, forced to read it, finds image-module elements in it; arbitrary bytes
    pass neither test, so they are reported as unrecognised rather than as a broken DICOM.
    """
    if len(data) < 8:
        return False
    return _starts_with_standard_element(data) or _force_reads_image_elements(data)


def _starts_with_standard_element(data: bytes) -> bool:
    for order in "<>":
        group, element = struct.unpack_from(f"{order}HH", data)
        if group not in _FIRST_GROUPS or element > 0x00FF:
            continue
        explicit_vr = data[4:6]
        if explicit_vr.isalpha() and explicit_vr.isupper():
            return True
        (implicit_length,) = struct.unpack_from("<I", data, 4)  # implicit VR is little endian only
        if order == "<" and implicit_length < min(len(data), 1024):
            return True
    return False


def _force_reads_image_elements(data: bytes) -> bool:
    try:
        dataset = _read(data, force=True)
    except PurifyLabError:
        return False
    return any(keyword in dataset for keyword in _IMAGE_ELEMENTS)


def _read(data: bytes, *, force: bool) -> pydicom.Dataset:
    with warnings.catch_warnings():
        # pydicom warns about odd values by quoting them; those warnings must not reach stderr.
        warnings.simplefilter("ignore")
        with _dicom_guard("could not parse the DICOM file (truncated or corrupt)"):
            return pydicom.dcmread(io.BytesIO(data), force=force, specific_tags=_TECHNICAL_TAGS)


@contextmanager
def _dicom_guard(problem: str) -> Iterator[None]:
    """Turn pydicom's errors into `problem`; wrap only pydicom calls.

    Pydicom's own messages are dropped and the exception is not chained, because they may quote
    element values: no patient data can reach a message, traceback or log through this path.
    """
    try:
        yield
    except _DECODE_ERRORS:
        raise PurifyLabError(problem) from None


def decode_dicom(data: bytes, *, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """First frame of a DICOM image, displayed as a viewer would: modality LUT, VOI, MONOCHROME1."""
    dataset = _read(data, force=data[128:132] != b"DICM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # see _read
        if not any(element in dataset for element in _PIXEL_ELEMENTS):
            raise PurifyLabError("DICOM file has no pixel data (no PixelData element)")
        missing = [keyword for keyword in _REQUIRED if keyword not in dataset]
        if missing:
            raise PurifyLabError(f"DICOM image module is incomplete: missing {', '.join(missing)}")
        with _dicom_guard("DICOM image module has invalid Rows or Columns"):
            width, height = int(dataset.Columns), int(dataset.Rows)
            photometric = str(dataset.PhotometricInterpretation).strip().upper()
        check_dimensions(width, height, max_pixels=max_pixels)
        with _dicom_guard("DICOM image module has an invalid NumberOfFrames"):
            frame_count = int(dataset.get("NumberOfFrames") or 1)
        with _dicom_guard("DICOM file meta has an invalid transfer syntax"):
            transfer_syntax = _transfer_syntax(dataset)
        _require_decoder(transfer_syntax)
        _require_twelve_bit_jpeg_decoder(transfer_syntax, dataset)
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
        raise PurifyLabError(f"DICOM pixel data use {label}, which cannot be decoded here; it needs one of: {plugins}")


def _require_twelve_bit_jpeg_decoder(transfer_syntax: UID, dataset: pydicom.Dataset) -> None:
    """gdcm and Pillow decode 8-bit JPEG only; 12-bit extended needs pylibjpeg-libjpeg (GPL-3.0),
    which this MIT project leaves to the `dicom-gpl` extra."""
    from importlib.util import find_spec

    if transfer_syntax == JPEGExtended12Bit and int(dataset.get("BitsStored") or 8) > 8 and find_spec("libjpeg") is None:
        raise PurifyLabError(
            "DICOM pixel data are 12-bit JPEG extended, which only the GPL-3.0 decoder pylibjpeg-libjpeg reads: pip install 'purifylab[dicom-gpl]'"
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
        pixels = min_max(values.astype(np.float64))
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
    return rgb @ LUMA_WEIGHTS
