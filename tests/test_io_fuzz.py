"""Property test of the decoding path: any bytes give a valid LoadedImage or a PurifyLabError.

Seeds are small valid files of every supported container; hypothesis flips, deletes, inserts and
truncates bytes in them, and also feeds random bytes behind each format's magic number so the
decoders themselves (not just the sniffer) see garbage.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset

from core.errors import PurifyLabError
from core.io import LoadedImage, load_image


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _dicom_seed(pixels: np.ndarray) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.PatientName = "Doe^Jane"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = 2, -1000
    dataset.WindowCenter, dataset.WindowWidth = 1000, 3000
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


_RNG = np.random.default_rng(0)
_RGB = Image.fromarray((_RNG.random((24, 32, 3)) * 255).astype(np.uint8))
SEEDS = [
    _encode(_RGB, "PNG"),
    _encode(_RGB.convert("RGBA"), "PNG"),
    _encode(Image.fromarray((_RNG.random((24, 32)) * 65535).astype(np.uint16)), "PNG"),
    _encode(_RGB, "JPEG", quality=80),
    _encode(_RGB, "JPEG", quality=80, progressive=True),
    _encode(_RGB.convert("CMYK"), "JPEG"),
    _encode(_RGB.convert("P"), "GIF", save_all=True, append_images=[_RGB.convert("P").rotate(90)]),
    _encode(_RGB, "TIFF"),
    _encode(_RGB, "BMP"),
    _encode(_RGB, "WEBP"),
    _dicom_seed((_RNG.random((24, 32)) * 4095).astype(np.uint16)),
]
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF\0\0\0\0WEBP", b"\0" * 128 + b"DICM"]


@st.composite
def mutated_seed(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if len(data) < 2:
            break
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if operation == "flip":
            data[position] = draw(st.integers(0, 255))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 32))]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[position:]
    return bytes(data)


garbage = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS), st.binary(max_size=2048)),
)


def _decodes_or_refuses(data: bytes) -> None:
    start = time.perf_counter()
    try:
        result = load_image(data)
    except PurifyLabError as error:
        message = str(error)
        assert message and "\n" not in message and "Doe" not in message
    else:
        assert isinstance(result, LoadedImage)
        assert result.pixels.dtype == torch.float32 and result.pixels.ndim == 3
        assert torch.isfinite(result.pixels).all()
        assert 0.0 <= result.pixels.min() and result.pixels.max() <= 1.0
        assert not any("Doe" in note for note in result.notes)
    assert time.perf_counter() - start < 5.0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_seed())
def test_mutated_valid_files_decode_or_raise_purifylab_error(data):
    _decodes_or_refuses(data)


@settings(max_examples=200, deadline=None)
@given(garbage)
def test_random_bytes_decode_or_raise_purifylab_error(data):
    _decodes_or_refuses(data)


def test_every_seed_is_a_valid_image():
    """The mutations start from files that do load, so the property covers real decoding."""
    formats = {load_image(seed).format for seed in SEEDS}
    assert formats == {"PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP", "DICOM"}
