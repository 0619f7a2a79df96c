"""The hostile-file catalogue through the Python API and the app (the CLI door is in test_cli.py).

Every file either gives a correct result or one clear line; nothing hangs, and decoding the whole
catalogue again and again does not grow the process's memory.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest
import torch
from hostile_files import HOSTILE, LEGITIMATE
from streamlit.testing.v1 import AppTest
from test_io import gradient

from core.errors import PurifyLabError
from core.image_file import FRAMES_COUNTED
from core.io import load_image, to_model_input

APP = str(Path(__file__).resolve().parents[1] / "app.py")
RSS_GROWTH_BOUND_MB = 25.0


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_api_refuses_each_hostile_file_with_one_line_fast(name):
    data = HOSTILE[name]()
    start = time.perf_counter()
    with pytest.raises(PurifyLabError) as caught:
        load_image(data, name=name)
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    assert message and "\n" not in message
    assert name not in message, "the file name must not be echoed (it can carry patient data)"
    assert " object at 0x" not in message, "Python's name for a stream means nothing to a user"


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_api_turns_each_legitimate_file_into_a_model_input(name):
    batch = to_model_input(load_image(LEGITIMATE[name](), name=name), 128)
    assert batch.shape == (1, 1, 128, 128) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all() and 0 <= batch.min() and batch.max() <= 1
    assert batch.std() > 0.05, "a ramp must not decode to a flat image"


def test_a_many_page_tiff_gives_its_first_page_and_says_there_are_more():
    """Its pages are not all counted (`FRAMES_COUNTED` says why); the outcome is checked here, not
    the time it takes (a shared machine's timings belong in benchmarks)."""
    loaded = load_image(LEGITIMATE["many_pages.tif"](), name="many_pages.tif")
    assert loaded.format == "TIFF" and loaded.original_size == (16, 16)
    assert loaded.notes == (f"animated: first frame of more than {FRAMES_COUNTED}",)
    assert torch.allclose(loaded.pixels[0], torch.from_numpy(gradient(16, 16)).float() / 255, atol=1e-6)  # page 0, a ramp


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("/proc/self/status is not available on this platform")


def test_decoding_the_catalogue_repeatedly_does_not_leak():
    files = [(name, build()) for name, build in {**HOSTILE, **LEGITIMATE}.items()]

    def decode_all() -> None:
        for name, data in files:
            try:
                load_image(data, name=name)
            except PurifyLabError:
                pass

    decode_all()  # warm-up: lazy imports, decoder plugins, allocator pools
    gc.collect()
    before = _resident_mb()
    for _ in range(40):
        decode_all()
    gc.collect()
    growth = _resident_mb() - before
    assert growth < RSS_GROWTH_BOUND_MB, f"RSS grew by {growth:.1f} MB over 40 rounds of {len(files)} files"


@pytest.fixture()
def lab() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    app.switch_page("pages/lab.py").run()
    assert not app.exception, app.exception
    return app


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_app_shows_one_clear_error_for_each_hostile_upload(lab, name):
    lab.file_uploader(key="upload").set_value((name, HOSTILE[name](), "application/octet-stream")).run()
    assert not lab.exception, lab.exception
    errors = [error.value for error in lab.error]
    assert len(errors) == 1 and errors[0].startswith("This file cannot be used:"), errors
    assert "\n" not in errors[0] and name not in errors[0]


@pytest.mark.parametrize("name", ["monochrome1.dcm", "rle_compressed.dcm", "palette.png", "animated.gif"])
def test_app_attacks_and_purifies_awkward_legitimate_uploads(lab, name):
    lab.file_uploader(key="upload").set_value((name, LEGITIMATE[name](), "application/octet-stream")).run()
    assert not lab.exception, lab.exception
    assert not lab.error, [error.value for error in lab.error]
    readings = [md.value for md in lab.markdown if "**NORMAL**" in md.value or "**PNEUMONIA**" in md.value]
    assert len(readings) >= 3, "original, adversarial and at least one purified reading"
