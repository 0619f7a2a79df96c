"""Image input and output shared by the app and the CLI.

Everything that reaches the models passes through here, so this is where untrusted uploads become
float32 grayscale tensors in [0, 1] or are refused with a one-line `PurifyLabError`. The decoding
itself, and its privacy and safety rules, live in the torch-free `core.image_file` and `core.dicom`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.errors import PurifyLabError
from core.image_file import MAX_PIXELS, MAX_UPLOAD_BYTES, MIN_SIDE, ImageSource, check_output_png, decode_image

__all__ = [
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "MIN_SIDE",
    "LoadedImage",
    "check_output_png",
    "encode_png",
    "load_image",
    "save_image",
    "to_model_input",
    "to_pil",
    "validate_image_tensor",
    "validate_labels",
]

RANGE_TOLERANCE = 1e-6
IMAGE_CHANNELS = (1, 3)  # the data sets' layouts: grey or RGB


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

    Arguments and refusals are those of `core.image_file.decode_image`.
    """
    decoded = decode_image(source, name=name, max_bytes=max_bytes, max_pixels=max_pixels)
    return LoadedImage(
        pixels=torch.from_numpy(decoded.pixels).unsqueeze(0),
        format=decoded.format,
        original_size=decoded.original_size,
        notes=decoded.notes,
    )


def validate_image_tensor(x: torch.Tensor, channels: int | tuple[int, ...] = 1) -> torch.Tensor:
    """The check every core entry point runs: NCHW float, `channels` channels, finite, in [0, 1].

    `channels` is the count the model takes, or the counts it accepts (a purifier without a network
    of its own takes grey or RGB); never read it off `x`, or an NHWC batch passes as H channels.

    Values up to 1e-6 outside [0, 1] (rounding in resizes and attacks) are clamped; anything
    further out is refused, because it means the caller used another scale (0-255, normalised).
    Returns a float32 tensor (autograd is kept).
    """
    if not isinstance(x, torch.Tensor):
        raise PurifyLabError(f"image must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 4:
        raise PurifyLabError(f"image must be 4-D (N, C, H, W); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise PurifyLabError(f"image dtype is {x.dtype}; expected float32 in [0, 1] (divide 8-bit images by 255)")
    allowed = (channels,) if isinstance(channels, int) else tuple(channels)
    if x.shape[1] not in allowed:
        expected = " or ".join(map(str, allowed))
        raise PurifyLabError(f"image of shape {tuple(x.shape)} has {x.shape[1]} channels; expected (N, {expected}, H, W)")
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


def validate_labels(labels: torch.Tensor, count: int, num_classes: int) -> torch.Tensor:
    """The labels' check at the same boundaries: integer class indices, shape (count,), in [0, num_classes).

    Any integer dtype is widened to int64 (what the losses need); float labels are refused, since
    0.9 is no class.
    """
    if not isinstance(labels, torch.Tensor):
        raise PurifyLabError(f"labels must be a torch.Tensor of class indices; got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise PurifyLabError(f"labels dtype is {labels.dtype}; expected int64 class indices")
    if tuple(labels.shape) != (count,):
        raise PurifyLabError(f"labels of shape {tuple(labels.shape)} do not fit {count} images; expected ({count},)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise PurifyLabError(f"labels span [{low}, {high}]; the classifier has {num_classes} classes, so expected [0, {num_classes - 1}]")
    return labels.long()


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
        raise PurifyLabError(f"expected one image shaped (H, W), (1, H, W) or (1, 1, H, W); got {tuple(tensor.shape)}")
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


GREY_LEVEL = 1.0 / 255.0  # one step of the 8-bit images the app shows and `save_image` writes
GREY_LEVEL_TOLERANCE = 1e-4  # of a grey level: float error of a change projected onto the budget's edge


def on_grey_levels(adversarial: torch.Tensor, clean: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """What an 8-bit PNG of `adversarial` holds, so a reading shown beside a saved or downloaded attacked
    image is the file's own (rounding undid small attacks: 27 of 576 gallery cases read otherwise).

    `clean` goes to its nearest grey level, and each pixel's change from there is rounded towards
    zero: no pixel moves further than the attack moved it, so an L-inf or L2 budget measured from the
    grey-level clean image (the one the attack must start from: `core.lab.attack_image`) holds on the
    file (rounding to the nearest level grew an L2 budget of 0.1 to 0.175). A budget `eps` under one
    grey level is refused: no 8-bit image but the clean one lies within it, so the attack would vanish
    silently. `on_grey_levels(x, x)` is `x` on its nearest grey levels."""
    if eps is not None and 0 < eps < GREY_LEVEL * (1 - GREY_LEVEL_TOLERANCE):
        raise PurifyLabError(
            f"eps {eps:g} is under one grey level (1/255 = {GREY_LEVEL:.5f}) of the 8-bit image the attack is shown and saved as: "
            "only the clean image lies within it; use eps 0 or at least 1/255"
        )
    clean_levels = (clean * 255.0).round()
    change = adversarial * 255.0 - clean_levels
    kept = change.sign() * (change.abs() + GREY_LEVEL_TOLERANCE).floor()
    return (clean_levels + kept) / 255.0


def encode_png(tensor: torch.Tensor, text: Mapping[str, str] | None = None) -> bytes:
    """PNG bytes of an image tensor (for downloads in the app), with `text` in its text chunks: what made
    the image travels with the file, so two downloads never look alike whatever made them.

    Each entry is one tEXt chunk; a value that is not Latin-1 (ε, ∞) goes in iTXt, the spec's UTF-8 text
    chunk. Keywords are held to the spec (1-79 printable Latin-1 characters, no leading, trailing or
    double space): Pillow writes any keyword it is given.
    """
    info = PngInfo()
    for keyword, value in (text or {}).items():
        printable = isinstance(keyword, str) and all(" " <= c <= "~" or "\xa1" <= c <= "\xff" for c in keyword)
        if not (printable and 0 < len(keyword) <= 79 and keyword == keyword.strip() and "  " not in keyword):
            raise PurifyLabError(f"PNG text keyword {keyword!r} is not 1-79 printable Latin-1 characters without leading, trailing or double spaces")
        if not isinstance(value, str) or "\0" in value:
            raise PurifyLabError(f"PNG text {keyword!r} must be a string without NUL characters; got {type(value).__name__}")
        info.add_text(keyword, value)
    buffer = io.BytesIO()
    to_pil(tensor).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_image(tensor: torch.Tensor, path: str | PathLike) -> Path:
    """Write an image tensor as an 8-bit grayscale PNG; the name must end in .png."""
    path = check_output_png(path)
    path.write_bytes(encode_png(tensor))
    return path
