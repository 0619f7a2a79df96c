"""One catalogue of malformed, hostile and awkward-but-legitimate files, built in memory.

The CLI, the Python API and the app are all tested against this same list, so a file added here is
tried through every door a user can bring it in by.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import JPEGLSLossless, RLELossless
from test_io import DICOM_RAMP, encode, float_dicom, gradient, make_dicom, png_bomb, png_chunk


def _animated_gif() -> bytes:
    frames = [Image.fromarray(gradient(64, 64)), Image.fromarray(255 - gradient(64, 64))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _rle_dicom() -> bytes:
    """A really compressed DICOM (RLE Lossless, which pydicom decodes natively)."""
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(DICOM_RAMP)))
    dataset.compress(RLELossless)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _inf_dicom() -> bytes:
    values = DICOM_RAMP.astype(np.float32)
    values[3, 3] = np.inf
    return float_dicom(values)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and then ends: huge dimensions cost nothing to send."""
    import struct

    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def _many_page_tiff(pages: int, side: int = 16) -> bytes:
    """A TIFF of `pages` chained pages sharing one grey ramp strip, 102 bytes a page: cheap to send,
    while counting all its pages costs time quadratic in their number (`core.image_file.FRAMES_COUNTED`)."""
    import struct

    tags = 8
    page_bytes = 2 + tags * 12 + 4
    strip_at = 8 + pages * page_bytes
    strip = gradient(side, side).tobytes()
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        following = 8 + (page + 1) * page_bytes if page < pages - 1 else 0
        out += struct.pack("<H", tags)
        for tag, value in ((256, side), (257, side), (258, 8), (259, 1), (262, 1), (273, strip_at), (278, side), (279, len(strip))):
            out += struct.pack("<HHII", tag, 4, 1, value)  # every value as one LONG
        out += struct.pack("<I", following)
    return bytes(out + strip)


# name -> bytes; each must be refused with one line, quickly, and nothing written.
HOSTILE = {
    "empty.png": lambda: b"",
    "truncated.png": lambda: encode(Image.fromarray(gradient(64, 64)), "PNG")[:60],
    "truncated.jpg": lambda: encode(Image.fromarray(gradient(64, 64)), "JPEG")[:200],
    "page.png": lambda: b"<!DOCTYPE html><html><body>not an image</body></html>",
    "script.jpg": lambda: b"#!/bin/sh\nrm -rf /\n",
    "noise.jpg": lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "bomb.png": lambda: png_bomb(30000, 30000),
    "wide.png": lambda: _png_header_only(2**31 - 1, 1),
    "one_pixel.png": lambda: encode(Image.fromarray(np.zeros((1, 1), np.uint8)), "PNG"),
    "tiny.png": lambda: encode(Image.fromarray(np.zeros((3, 3), np.uint8)), "PNG"),
    "no_pixels.dcm": lambda: make_dicom(DICOM_RAMP, with_pixels=False),
    "jpeg_ls.dcm": lambda: make_dicom(DICOM_RAMP, transfer_syntax=JPEGLSLossless),
    "inf_pixels.dcm": _inf_dicom,
}

# name -> bytes; each must load and give a valid result.
LEGITIMATE = {
    "sixteen.png": lambda: encode(Image.fromarray(gradient(64, 64).astype(np.uint16) * 257), "PNG"),
    "rgba.png": lambda: encode(Image.fromarray(np.dstack([gradient(64, 64)] * 3 + [np.full((64, 64), 255, np.uint8)])), "PNG"),
    "cmyk.jpg": lambda: encode(Image.fromarray(gradient(64, 64)).convert("CMYK"), "JPEG"),
    "palette.png": lambda: encode(Image.fromarray(gradient(64, 64)).convert("P"), "PNG"),
    "animated.gif": _animated_gif,
    "many_pages.tif": lambda: _many_page_tiff(1000),  # 100 KB: 173 ms to decode counting every page, 0.3 ms counting 3
    "png_named.jpg": lambda: encode(Image.fromarray(gradient(64, 64)), "PNG"),
    "monochrome1.dcm": lambda: make_dicom(DICOM_RAMP, photometric="MONOCHROME1"),
    "rle_compressed.dcm": _rle_dicom,
}
