"""core.io: every legitimate variant loads correctly, every hostile one fails fast with one line."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000MC,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from core.errors import PurifyLabError
from core.io import (
    MAX_PIXELS,
    MIN_SIDE,
    LoadedImage,
    encode_png,
    load_image,
    save_image,
    to_model_input,
    to_pil,
    validate_image_tensor,
    validate_labels,
)

# ---------------------------------------------------------------- builders (all in memory)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def gradient(height: int = 24, width: int = 40) -> np.ndarray:
    """uint8 ramp along the width: every column a distinct, known level."""
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid IHDR declaring width x height grayscale and a tiny zlib stream: a few hundred bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    with_pixels: bool = True,
    preamble: bool = True,
    **elements,
) -> bytes:
    """A 12-bit-in-16 DICOM file with patient tags that must never come out of load_image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    dataset.PatientName = "Doe^Jane"
    dataset.PatientID = "DOE-123456"
    dataset.PatientBirthDate = "19800101"
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    if with_pixels and transfer_syntax == ExplicitVRLittleEndian:
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    elif with_pixels:
        dataset.PixelData = encapsulate([b"\xff\xd8 not really compressed \xff\xd9" * 4])
        dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    if preamble:
        dataset.save_as(buffer, enforce_file_format=True)
    else:
        del dataset.file_meta
        dataset.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


DICOM_RAMP = np.tile(np.arange(32, dtype=np.uint16) * 128, (32, 1))  # 0 .. 3968, 12-bit


def assert_valid(result: LoadedImage, fmt: str, shape: tuple[int, int]) -> None:
    assert isinstance(result, LoadedImage)
    assert result.format == fmt
    assert result.pixels.dtype == torch.float32
    assert tuple(result.pixels.shape) == (1, *shape)
    assert result.original_size == (shape[1], shape[0])
    assert torch.isfinite(result.pixels).all()
    assert 0.0 <= result.pixels.min() and result.pixels.max() <= 1.0


def refused(source, match: str, **kwargs) -> str:
    """load_image must raise PurifyLabError whose one-line message matches, and quickly."""
    start = time.perf_counter()
    with pytest.raises(PurifyLabError, match=match) as caught:
        load_image(source, **kwargs)
    assert time.perf_counter() - start < 5.0
    message = str(caught.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------- legitimate raster formats


def test_real_xrays_load_as_224_grayscale_matching_pillow(xray_paths):
    for path in xray_paths["NORMAL"][:3] + xray_paths["PNEUMONIA"][:3]:
        result = load_image(path)
        assert_valid(result, "JPEG", (224, 224))
        reference = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        assert np.allclose(result.pixels[0].numpy(), reference, atol=1e-6)
        assert result.notes == ()  # grey RGB JPEGs: nothing lossy happened
        assert result.pixels.std() > 0.05  # a real radiograph, not a blank


def test_serving_resize_agrees_with_the_data_set_resize_within_one_grey_level(xray_paths):
    """The two resizes (see core.io.to_model_input) feed models the same pixels up to 8-bit rounding."""
    from core.data.decode import prepare_image

    for path in xray_paths["NORMAL"][:2] + xray_paths["PNEUMONIA"][:2]:
        for size in (64, 128, 224):
            served = to_model_input(load_image(path), size)[0].numpy()
            trained = prepare_image(Image.open(path), channels=1, size=size).astype(np.float32) / 255.0
            assert np.abs(served - trained).max() <= 1.0 / 255.0


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "GIF"])
def test_lossless_formats_keep_the_grey_levels(fmt):
    ramp = gradient()
    result = load_image(encode(Image.fromarray(ramp), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert_valid(result, fmt, ramp.shape)
    assert np.allclose(result.pixels[0].numpy(), ramp / 255.0, atol=1 / 255)


def test_sixteen_bit_png_uses_the_full_range_without_clipping():
    levels = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (20, 1))
    result = load_image(encode(Image.fromarray(levels), "PNG"))
    assert_valid(result, "PNG", levels.shape)
    assert "16-bit rescaled" in result.notes
    pixels = result.pixels[0].numpy()
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    assert np.allclose(pixels, levels / 65535.0, atol=1e-6)
    # 64 distinct input levels stay distinct (an 8-bit or clipping path would merge or flatten them)
    assert len(np.unique(pixels)) == 64
    assert abs(pixels[0, 32] - levels[0, 32] / 65535.0) < 1e-6 and 0.4 < pixels[0, 32] < 0.6


def test_rgb_colour_becomes_one_luminance_channel_and_says_so():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luma 0.299
    result = load_image(encode(Image.fromarray(rgb), "PNG"))
    assert_valid(result, "PNG", (20, 20))
    assert "colour converted to luminance" in result.notes
    assert torch.allclose(result.pixels, torch.full_like(result.pixels, 76 / 255))


def test_rgba_with_transparency_is_flattened_on_black():
    rgba = np.full((20, 30, 4), 200, np.uint8)
    rgba[:, :15, 3] = 0  # left half fully transparent
    rgba[:, 15:, 3] = 255
    result = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert "RGBA flattened on black" in result.notes
    assert result.pixels[0, :, :15].max() == 0.0
    assert torch.allclose(result.pixels[0, :, 15:], torch.tensor(200 / 255))


def test_opaque_rgba_and_la_drop_the_alpha_channel():
    rgba = np.full((20, 20, 4), 100, np.uint8)
    rgba[..., 3] = 255
    result = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert "alpha dropped" in result.notes
    assert torch.allclose(result.pixels, torch.tensor(100 / 255))
    grey_alpha = Image.fromarray(rgba[..., :2].copy(), "LA")
    grey_alpha.putalpha(128)
    flattened = load_image(encode(grey_alpha, "PNG"))
    assert "LA flattened on black" in flattened.notes
    assert torch.allclose(flattened.pixels, torch.tensor(100 / 255 * 128 / 255), atol=1e-6)


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (32, 24), (0, 0, 0, 0))  # no ink: white
    result = load_image(encode(cmyk, "JPEG", quality=95))
    assert_valid(result, "JPEG", (24, 32))
    assert "CMYK converted" in result.notes
    assert result.pixels.min() > 0.95


def test_palette_png_is_expanded_to_its_grey_levels():
    ramp = gradient()
    palette_image = Image.fromarray(ramp).convert("P")
    result = load_image(encode(palette_image, "PNG"))
    assert "palette expanded" in result.notes
    assert np.allclose(result.pixels[0].numpy(), ramp / 255.0, atol=1 / 255)


def test_format_comes_from_content_not_extension(tmp_path):
    png = encode(Image.fromarray(gradient()), "PNG")
    path = tmp_path / "scan.jpg"
    path.write_bytes(png)
    from_path = load_image(path)
    assert_valid(from_path, "PNG", (24, 40))
    assert "content is PNG; the '.jpg' extension was ignored" in from_path.notes
    assert load_image(png, name="scan.png").notes == ()
    with path.open("rb") as handle:  # binary file objects report their name too
        assert load_image(handle).notes == from_path.notes


def test_exif_orientation_is_applied_and_swaps_the_shape():
    upright = np.zeros((24, 40), np.uint8)
    upright[:, :10] = 255  # a bright left band: where it ends up shows the rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    result = load_image(encode(Image.fromarray(upright), "JPEG", exif=exif.tobytes(), quality=95))
    assert "EXIF rotation applied" in result.notes
    assert_valid(result, "JPEG", (40, 24))
    assert result.original_size == (24, 40)
    assert result.pixels[0, :10, :].mean() > 0.9  # the left band is now on top
    assert result.pixels[0, 12:, :].mean() < 0.1


def test_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(np.full((20, 20), level, np.uint8)) for level in (30, 200, 120)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    result = load_image(data)
    assert "animated: first frame of 3" in result.notes
    assert torch.allclose(result.pixels, torch.tensor(30 / 255))


@pytest.mark.parametrize(("pages", "counted"), [(2, "2"), (3, "3"), (4, "more than 3"), (40, "more than 3")])
def test_multi_page_tiff_gives_its_first_page_and_counts_only_a_few(pages, counted):
    """Counting every page took minutes on a large many-page file: the count stops at FRAMES_COUNTED."""
    frames = [Image.fromarray(np.full((20, 20), 30 + 5 * page, np.uint8)) for page in range(pages)]
    result = load_image(encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    assert result.notes == (f"animated: first frame of {counted}",)
    assert torch.allclose(result.pixels, torch.tensor(30 / 255))


def test_sources_bytes_path_and_file_object_agree(tmp_path):
    data = encode(Image.fromarray(gradient()), "PNG")
    path = tmp_path / "image.png"
    path.write_bytes(data)
    results = [load_image(data), load_image(bytearray(data)), load_image(str(path)), load_image(io.BytesIO(data))]
    for result in results[1:]:
        assert torch.equal(result.pixels, results[0].pixels)


def test_load_image_writes_nothing_and_leaves_warning_filters_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    filters_before = list(warnings.filters)
    load_image(encode(Image.fromarray(gradient()), "PNG"))
    refused(png_bomb(10_000, 10_000), "decompression bomb")
    assert list(tmp_path.iterdir()) == []
    assert list(warnings.filters) == filters_before


# ---------------------------------------------------------------- DICOM


def test_dicom_monochrome2_without_window_is_min_max_scaled():
    result = load_image(make_dicom(DICOM_RAMP))
    assert_valid(result, "DICOM", (32, 32))
    assert "DICOM values min-max scaled" in result.notes
    assert np.allclose(result.pixels[0].numpy(), DICOM_RAMP / DICOM_RAMP.max(), atol=1e-6)


def test_dicom_monochrome1_is_inverted():
    plain = load_image(make_dicom(DICOM_RAMP))
    inverted = load_image(make_dicom(DICOM_RAMP, photometric="MONOCHROME1"))
    assert "DICOM MONOCHROME1 inverted" in inverted.notes
    assert torch.allclose(inverted.pixels, 1.0 - plain.pixels, atol=1e-6)
    assert inverted.pixels[0, 0, 0] == 1.0  # stored zero is white in MONOCHROME1


def test_dicom_window_centre_width_is_applied():
    result = load_image(make_dicom(DICOM_RAMP, WindowCenter=2000, WindowWidth=1000))
    assert "DICOM window 2000/1000 applied" in result.notes
    row = result.pixels[0, 0].numpy()
    stored = DICOM_RAMP[0]
    assert (row[stored <= 1500] == 0.0).all() and (row[stored >= 2500] == 1.0).all()
    inside = (stored > 1500) & (stored < 2500)
    assert np.allclose(row[inside], (stored[inside] - 1500) / 1000, atol=0.01)


def test_dicom_rescale_is_applied_before_the_window():
    # HU = 2 * stored - 1000: window [-1000, 1000] HU covers stored 0 .. 1000
    result = load_image(make_dicom(DICOM_RAMP, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=2000))
    assert "DICOM rescale slope/intercept applied" in result.notes
    row, stored = result.pixels[0, 0].numpy(), DICOM_RAMP[0]
    assert row[stored == 512][0] == pytest.approx(0.512, abs=0.01)
    assert (row[stored >= 1024] == 1.0).all()


def test_dicom_multiframe_gives_the_first_frame():
    frames = np.stack([DICOM_RAMP, DICOM_RAMP[:, ::-1]])
    result = load_image(make_dicom(frames, NumberOfFrames=2))
    assert "DICOM multi-frame: first frame of 2" in result.notes
    assert result.pixels[0, 0, 0] == 0.0 and result.pixels[0, 0, -1] == 1.0


def test_dicom_rgb_is_converted_to_luminance():
    data = make_dicom(DICOM_RAMP, with_pixels=False)
    dataset = pydicom.dcmread(io.BytesIO(data))
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[..., 1] = 255  # pure green -> luma 0.587, the same weights as Pillow's convert("L")
    dataset.Rows, dataset.Columns = rgb.shape[:2]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = rgb.tobytes()
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    result = load_image(buffer.getvalue())
    assert "colour converted to luminance" in result.notes
    assert torch.allclose(result.pixels, torch.tensor(0.587))


def test_dicom_without_preamble_is_recognised_by_content():
    result = load_image(make_dicom(DICOM_RAMP, preamble=False), name="export.bin")
    assert_valid(result, "DICOM", (32, 32))


def test_dicom_without_pixel_data_is_refused():
    refused(make_dicom(DICOM_RAMP, with_pixels=False), "DICOM file has no pixel data")


def test_dicom_with_a_syntax_pydicom_cannot_decode_names_it():
    message = refused(make_dicom(DICOM_RAMP, transfer_syntax=JPEG2000MC), "is not supported")
    assert "JPEG 2000" in message and JPEG2000MC in message


def test_dicom_with_corrupt_jpeg_ls_pixel_data_is_refused():
    refused(make_dicom(DICOM_RAMP, transfer_syntax=JPEGLSLossless), "could not decode the DICOM pixel data")


def float_dicom(values: np.ndarray) -> bytes:
    """A DICOM with 32-bit float pixels (FloatPixelData), e.g. holding NaN or Inf."""
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(values, with_pixels=False)))
    dataset.BitsAllocated = 32
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(dataset, keyword)
    dataset.FloatPixelData = values.astype(np.float32).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_float_pixels_with_nan_are_refused():
    values = DICOM_RAMP.astype(np.float32)
    values[3, 3] = np.nan
    refused(float_dicom(values), "NaN or Inf")


def test_dicom_patient_tags_never_leave_the_loader(capfd):
    outputs = [load_image(make_dicom(DICOM_RAMP, WindowCenter=2000, WindowWidth=1000), name="Doe_Jane.dcm")]
    messages = [
        refused(make_dicom(DICOM_RAMP, with_pixels=False), "no pixel data"),
        refused(make_dicom(DICOM_RAMP, transfer_syntax=JPEGLSLossless), "DICOM"),
        refused(make_dicom(DICOM_RAMP)[:700], "DICOM"),
    ]
    exposed = " ".join(messages) + repr(outputs) + " ".join(outputs[0].notes)
    captured = capfd.readouterr()
    for secret in ("Doe", "Jane", "DOE-123456", "19800101"):
        assert secret not in exposed
        assert secret not in captured.out + captured.err
    assert {f.name for f in outputs[0].__dataclass_fields__.values()} == {"pixels", "format", "original_size", "notes"}


# ---------------------------------------------------------------- hostile input


def test_empty_input_is_refused():
    refused(b"", "empty")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_refused(fmt):
    data = encode(Image.fromarray(gradient(64, 64)), fmt)
    refused(data[: len(data) // 2], f"could not decode the {fmt} image")


def test_html_named_png_is_refused_without_echoing_the_name(tmp_path):
    path = tmp_path / "Doe_Jane.png"
    path.write_bytes(b"<!DOCTYPE html><html><body>Not found</body></html>")
    message = refused(path, "looks like text or HTML")
    assert "'.png'" in message and "Doe" not in message


def test_random_bytes_are_refused():
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    refused(b"\x00" * 4 + noise, "unrecognised image format")


@pytest.mark.parametrize("side", [8_000, 10_000, 30_000])
def test_decompression_bombs_fail_fast_from_the_header(side):
    bomb = png_bomb(side, side)
    assert len(bomb) < 2_000
    message = refused(bomb, "pixels")
    assert f"{MAX_PIXELS:,}" in message or "decompression bomb" in message


def test_max_pixels_is_enforced_before_decoding():
    data = encode(Image.fromarray(gradient(64, 64)), "PNG")
    refused(data, "64 x 64 = 4,096 pixels; the limit is 1,000", max_pixels=1000)


def test_tiny_images_are_refused_with_the_minimum():
    refused(encode(Image.fromarray(np.zeros((3, 3), np.uint8)), "PNG"), f"at least {MIN_SIDE} px")


def test_oversized_files_are_refused_before_decoding(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    assert len(data) > 4000 and load_image(data).format == "PNG"
    refused(data, "larger than the 1,000-byte limit", max_bytes=1000)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    refused(path, "larger than", max_bytes=1000)
    refused(io.BytesIO(data), "larger than", max_bytes=1000)


def test_bad_sources_are_refused(tmp_path):
    refused(tmp_path / "Doe_missing.png", "not found")
    refused(tmp_path, "folder")
    (tmp_path / "a.png").write_bytes(b"x")
    with (tmp_path / "a.png").open("r") as text_handle:
        refused(text_handle, "binary mode")
    refused(12345, "must be bytes, a path or a binary file object")
    refused(b"\x89PNG", "max_pixels must be", max_pixels=0)


# ---------------------------------------------------------------- tensors out


def test_to_model_input_squashes_to_a_square_batch_of_one(xray_paths):
    loaded = load_image(xray_paths["PNEUMONIA"][0])
    model_input = to_model_input(loaded, 128)
    assert model_input.shape == (1, 1, 128, 128) and model_input.dtype == torch.float32
    assert 0.0 <= model_input.min() and model_input.max() <= 1.0
    # antialiased downscaling keeps the mean brightness
    assert abs(model_input.mean().item() - loaded.pixels.mean().item()) < 0.01
    wide = torch.rand(1, 30, 90)
    assert to_model_input(wide, 64).shape == (1, 1, 64, 64)  # aspect ratio not kept
    assert torch.equal(to_model_input(loaded.pixels[0], 224)[0, 0], loaded.pixels[0])
    constant = torch.full((1, 1, 50, 70), 0.25)
    assert torch.allclose(to_model_input(constant, 32), torch.tensor(0.25))


def test_to_model_input_refuses_bad_sizes_and_shapes():
    with pytest.raises(PurifyLabError, match="size must be a positive integer"):
        to_model_input(torch.rand(1, 20, 20), 0)
    with pytest.raises(PurifyLabError, match="expected one image"):
        to_model_input(torch.rand(2, 1, 20, 20), 16)
    with pytest.raises(PurifyLabError, match=r"3 channels; expected \(N, 1, H, W\)"):
        to_model_input(torch.rand(1, 3, 20, 20), 16)


def test_on_grey_levels_rounds_each_change_towards_the_clean_image():
    """Each pixel went to its nearest grey level, so an L2 attack at eps 0.1 was saved at 0.175: rounding the
    change towards the clean image (itself on its nearest level) moves no pixel further than the attack did."""
    from core.io import on_grey_levels

    generator = torch.Generator().manual_seed(0)
    clean = 0.1 + 0.8 * torch.rand(1, 1, 32, 32, generator=generator)  # off the grey levels, as a resized X-ray is
    start = (clean * 255).round() / 255
    adversarial = start + (2 * torch.rand(clean.shape, generator=generator) - 1) * 3 / 255  # up to 3 levels either way
    kept = on_grey_levels(adversarial, clean)
    assert torch.equal(kept, (kept * 255).round() / 255) and torch.equal(on_grey_levels(clean, clean), start)
    moved, asked = (kept - start).abs(), (adversarial - start).abs()
    assert (moved <= asked + 1e-7).all() and (moved > asked - 1 / 255).all()  # towards the clean image, by under a level
    assert (kept - start).norm() <= (adversarial - start).norm() and (kept - start).abs().max() <= (adversarial - start).abs().max()
    at_the_edge = on_grey_levels(start + 8 / 255, start) - start  # float error at the budget's edge loses no level
    assert torch.allclose(at_the_edge * 255, torch.tensor(8.0), atol=1e-4)
    with pytest.raises(PurifyLabError, match=r"^eps 0.001 is under one grey level"):
        on_grey_levels(adversarial, clean, 0.001)
    assert torch.equal(on_grey_levels(adversarial, clean, 0.0), kept) and torch.equal(on_grey_levels(adversarial, clean, 1 / 255), kept)


def test_png_round_trip_through_save_encode_and_load(tmp_path):
    image = torch.rand(1, 1, 20, 30)
    path = save_image(image, tmp_path / "out.png")
    reloaded = load_image(path)
    assert reloaded.format == "PNG" and reloaded.original_size == (30, 20)
    assert (reloaded.pixels - image[0]).abs().max() <= 0.5 / 255 + 1e-6
    assert load_image(encode_png(image[0])).pixels.equal(reloaded.pixels)
    pil = to_pil(image[0, 0])
    assert pil.mode == "L" and pil.size == (30, 20)


def test_saving_refuses_bad_tensors_and_names(tmp_path):
    bad_values = [torch.full((1, 20, 20), float("nan")), torch.full((1, 20, 20), 1.5), torch.full((20, 20), -0.1)]
    for bad in bad_values:
        with pytest.raises(PurifyLabError, match="NaN|expected \\[0, 1\\]"):
            save_image(bad, tmp_path / "bad.png")
    with pytest.raises(PurifyLabError, match="must be a .png file"):
        save_image(torch.rand(1, 20, 20), tmp_path / "out.jpg")
    with pytest.raises(PurifyLabError, match="output folder .* does not exist"):
        save_image(torch.rand(1, 20, 20), tmp_path / "missing" / "out.png")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out.png").mkdir()
    with pytest.raises(PurifyLabError, match="is a folder"):
        save_image(torch.rand(1, 20, 20), tmp_path / "out.png")


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (torch.rand(1, 3, 8, 8), r"has 3 channels; expected \(N, 1, H, W\)"),
        (torch.full((1, 1, 8, 8), float("nan")), "image contains NaN or Inf pixels"),
        (torch.full((1, 1, 8, 8), float("inf")), "image contains NaN or Inf pixels"),
        (torch.rand(1, 8, 8), "must be 4-D"),
        (torch.randint(0, 255, (1, 1, 8, 8), dtype=torch.uint8), "dtype is torch.uint8"),
        (torch.rand(1, 1, 8, 8) * 255, "expected \\[0, 1\\]"),
        (torch.rand(1, 1, 8, 8) - 0.5, "expected \\[0, 1\\]"),
        (torch.empty(0, 1, 8, 8), "empty"),
        ([[0.5]], "must be a torch.Tensor"),
    ],
)
def test_validate_image_tensor_names_the_problem(tensor, message):
    with pytest.raises(PurifyLabError, match=message):
        validate_image_tensor(tensor)


def test_validate_image_tensor_clamps_rounding_noise_and_keeps_gradients():
    x = torch.tensor([[[[1.0 + 5e-7, -5e-7], [0.25, 0.75]]]], dtype=torch.float64, requires_grad=True)
    checked = validate_image_tensor(x)
    assert checked.dtype == torch.float32
    assert checked.min() == 0.0 and checked.max() == 1.0
    checked.sum().backward()
    assert x.grad is not None
    assert validate_image_tensor(torch.rand(2, 3, 8, 8), channels=3).shape == (2, 3, 8, 8)
    assert validate_image_tensor(torch.rand(2, 3, 8, 8), channels=(1, 3)).shape == (2, 3, 8, 8)
    with pytest.raises(PurifyLabError, match=r"shape \(2, 8, 8, 1\) has 8 channels; expected \(N, 1 or 3, H, W\)"):
        validate_image_tensor(torch.rand(2, 8, 8, 1), channels=(1, 3))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0.0, 1.0, 0.0]), "labels dtype is torch.float32; expected int64"),
        (torch.tensor([True, False, True]), "labels dtype is torch.bool"),
        (torch.tensor([[0, 1, 0]]), r"labels of shape \(1, 3\) do not fit 3 images; expected \(3,\)"),
        (torch.tensor([0, 1]), "do not fit 3 images"),
        (torch.tensor([0, 2, 1]), r"labels span \[0, 2\]; the classifier has 2 classes"),
        (torch.tensor([-1, 0, 1]), r"labels span \[-1, 1\]"),
        ([0, 1, 0], "labels must be a torch.Tensor"),
    ],
)
def test_validate_labels_names_the_problem(labels, message):
    with pytest.raises(PurifyLabError, match=message):
        validate_labels(labels, 3, 2)


def test_validate_labels_widens_integer_labels_to_int64():
    assert validate_labels(torch.tensor([0, 1, 1], dtype=torch.int32), 3, 2).dtype == torch.int64


def test_png_text_travels_with_the_pixels_and_bad_keywords_are_refused():
    # Without it every downloaded PNG carried no settings: two files looked alike whatever made them.
    image = torch.rand(1, 1, 20, 30, generator=torch.Generator().manual_seed(0))
    facts = {"classifier": "vit (weights SHA-256 0123456789ab)", "attack": "PGD, 10 step(s), L∞ ε 0.030, seed 0"}
    encoded = encode_png(image, facts)
    with Image.open(io.BytesIO(encoded)) as png:
        assert png.text == facts  # ε and ∞ are not Latin-1: they travel in iTXt, read back alike
        assert np.array_equal(np.asarray(png), np.asarray(to_pil(image)))
    assert b"tEXt" in encoded and b"iTXt" in encoded
    assert encode_png(image) == encode_png(image, {})  # no text, no text chunks
    assert b"tEXt" not in encode_png(image)
    for keyword in ["", "k" * 80, " leading", "double  space", "tab\there", "ε"]:
        with pytest.raises(PurifyLabError, match="is not 1-79 printable Latin-1 characters"):
            encode_png(image, {keyword: "value"})
    with pytest.raises(PurifyLabError, match="without NUL characters; got float"):
        encode_png(image, {"eps": 0.03})
