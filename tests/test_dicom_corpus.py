"""pydicom's own corpus of real DICOM files, as hospitals and toolkits write them.

The fixture is the 78 `.dcm` files that ship inside the pydicom wheel (`pydicom/data/test_files`),
so it works offline; the other files of pydicom-data are downloaded on demand from GitHub and are
not covered. pydicom itself, with the decoder plugins this project depends on, is the oracle: a file
whose first frame it decodes at 16 px or more per side must load, every other one must be refused
with one line.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from core.errors import PurifyLabError
from core.io import MIN_SIDE, load_image

FOLDER = Path(pydicom.data.__file__).parent / "test_files"
CORPUS = sorted(FOLDER.glob("*.dcm"))
# The same 64 x 64 MR slice in seven encodings, windowed 600/1600 by its own header.
MR_SMALL = [
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


def _oracle_first_frame(path: Path) -> np.ndarray | None:
    """pydicom's own decoding of the first frame, or None where pydicom cannot produce one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(path, force=True)
            frames = dataset.pixel_array
            multi_frame = int(dataset.get("NumberOfFrames") or 1) > 1
        except Exception:  # the oracle's verdict, whatever pydicom raises
            return None
    return frames[0] if multi_frame else frames


@pytest.fixture(params=CORPUS, ids=lambda path: path.name)
def corpus_file(request) -> Path:
    return request.param


def test_the_corpus_ships_with_pydicom():
    assert len(CORPUS) == 78


def test_each_decodable_image_loads_and_the_rest_are_refused_with_one_line(corpus_file):
    frame = _oracle_first_frame(corpus_file)
    decodable = frame is not None and min(frame.shape[:2]) >= MIN_SIDE
    if decodable:
        loaded = load_image(corpus_file)
        assert loaded.format == "DICOM" and loaded.pixels.shape[-2:] == frame.shape[:2]
        assert 0 <= loaded.pixels.min() and loaded.pixels.max() <= 1
    else:
        with pytest.raises(PurifyLabError) as refusal:
            load_image(corpus_file)
        assert str(refusal.value) and "\n" not in str(refusal.value)
        assert corpus_file.name not in str(refusal.value)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"])
def test_the_dicm_marker_wins_over_a_tiff_header_in_the_preamble(name):
    path = FOLDER / name
    assert path.read_bytes()[:4] == b"II*\x00"
    assert load_image(path).format == "DICOM"


@pytest.mark.parametrize("name", ["ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"])
def test_a_data_set_without_preamble_or_meta_is_read_as_dicom(name):
    path = FOLDER / name
    with pytest.raises(PurifyLabError, match="no pixel data"):
        load_image(path)


def test_an_image_without_preamble_or_meta_in_any_byte_order_loads():
    """MR_small in three encodings, written bare (no preamble, no file meta), loads as the original."""
    reference = load_image(FOLDER / "MR_small.dcm").pixels
    for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"):
        dataset = pydicom.dcmread(FOLDER / name)
        implicit_vr, little_endian = dataset.original_encoding
        del dataset.file_meta
        dataset.preamble = None
        buffer = io.BytesIO()
        dataset.save_as(buffer, implicit_vr=implicit_vr, little_endian=little_endian)
        assert buffer.getvalue()[128:132] != b"DICM"
        assert np.array_equal(load_image(buffer.getvalue(), name="export").pixels, reference), name


def test_one_mr_slice_decodes_identically_whatever_its_transfer_syntax():
    images = {name: load_image(FOLDER / name).pixels for name in MR_SMALL}
    reference = images["MR_small.dcm"]
    for name, pixels in images.items():
        assert np.allclose(pixels, reference, atol=1e-6), name


def test_the_window_in_the_header_is_applied_as_a_viewer_would():
    """PS3.3 C.11.2.1.2.1 linear window, written out here rather than asked of pydicom."""
    path = FOLDER / "MR_small.dcm"
    dataset = pydicom.dcmread(path)
    centre, width = float(dataset.WindowCenter), float(dataset.WindowWidth)
    stored = dataset.pixel_array.astype(np.float64)
    expected = np.clip((stored - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
    assert np.allclose(load_image(path).pixels[0].numpy(), expected, atol=1e-5)


def test_monochrome1_is_inverted_after_the_window():
    path = FOLDER / "MR_small.dcm"
    dataset = pydicom.dcmread(path)
    dataset.PhotometricInterpretation = "MONOCHROME1"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    inverted = load_image(buffer.getvalue()).pixels
    assert np.allclose(inverted, 1 - load_image(path).pixels, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rtplan.dcm", "no pixel data"),
        ("rtdose.dcm", "at least 16 px"),
        ("SC_rgb_small_odd.dcm", "at least 16 px"),
        ("MR_truncated.dcm", "truncated or corrupt"),
        ("JPEG2000-embedded-sequence-delimiter.dcm", "truncated or corrupt"),
        ("meta_missing_tsyntax.dcm", "image module is incomplete"),
    ],
)
def test_a_refusal_says_why(name, reason):
    with pytest.raises(PurifyLabError, match=reason):
        load_image(FOLDER / name)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, process 14 SV1 (gdcm)
        "JPEG2000.dcm",  # JPEG 2000 (openjpeg)
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS (pyjpegls)
        "SC_rgb_jls_lossy_line.dcm",  # JPEG-LS near-lossless (pyjpegls)
        "MR_small_RLE.dcm",  # RLE (pylibjpeg-rle)
    ],
)
def test_each_compressed_syntax_of_the_corpus_has_an_installed_decoder(name):
    """The oracle above shares our plugins, so a missing one would pass there: name them here."""
    assert load_image(FOLDER / name).format == "DICOM"


def test_twelve_bit_jpeg_names_the_optional_gpl_decoder_when_it_is_missing():
    """12-bit JPEG extended decodes only with pylibjpeg-libjpeg (GPL-3.0), the `dicom-gpl` extra."""
    from importlib.util import find_spec

    if find_spec("libjpeg") is not None:
        assert load_image(FOLDER / "JPGExtended.dcm").format == "DICOM"
    else:
        with pytest.raises(PurifyLabError, match=r"^DICOM pixel data are 12-bit JPEG extended, .*'purifylab\[dicom-gpl\]'$"):
            load_image(FOLDER / "JPGExtended.dcm")
