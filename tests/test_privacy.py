"""Uploads live in memory only: an upload session on the lab writes no file and logs no identifier.

A random canary stands where identifiers live in real uploads — the file name, and a DICOM's
PatientName and PatientID — so any trace of it in a file listing or a log is a leak, never chance.
The same check against a real server process and browser is in tests/test_load.py.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")


def _load_script():
    """scripts/load_test.py is not a package; it holds the DICOM builder and the file listing both tests use."""
    spec = importlib.util.spec_from_file_location("load_test", REPO / "scripts" / "load_test.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


load_test = _load_script()


@pytest.fixture()
def every_log(caplog):
    """caplog at DEBUG on the root logger and on every logger that does not propagate (Streamlit's own)."""
    loggers = [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger) and not logger.propagate]
    caplog.set_level(logging.DEBUG)
    for logger in loggers:
        caplog.set_level(logging.DEBUG, logger=logger.name)
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


def test_upload_session_leaves_no_file_and_no_identifier_in_logs(xray_paths, every_log, capfd):
    canary = f"PLCANARY{uuid.uuid4().hex[:16]}"
    jpeg = xray_paths["PNEUMONIA"][0].read_bytes()
    gray = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))
    uploads = [(f"{canary}.jpeg", jpeg, "image/jpeg"), (f"{canary}.dcm", load_test.canary_dicom(gray, canary), "application/dicom")]
    # Listed by name, Python's __pycache__ bytecode excepted (load_test.list_files): the interpreter
    # compiles modules imported for the first time. The test framework itself adds nothing here:
    # capfd's buffers are unnamed temporary files and caplog keeps records in memory.
    roots = sorted({REPO, Path.cwd(), Path.home(), Path(tempfile.gettempdir())})
    before = load_test.list_files(roots)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = AppTest.from_file(APP, default_timeout=300)
        app.switch_page("pages/lab.py").run()
        for upload in uploads:
            app.file_uploader(key="upload").set_value(upload).run()
            assert not app.exception, app.exception
            assert not app.error, [error.value for error in app.error]
            assert any(caption.value.startswith("Image: your upload") for caption in app.caption)
            shown = [element.value for kind in ("markdown", "caption", "warning", "info") for element in getattr(app, kind)]
            assert not [text for text in shown if canary in str(text)]

    new_files = sorted(load_test.list_files(roots) - before)
    assert new_files == [], f"an upload session created files: {new_files}"
    out, err = capfd.readouterr()
    logged = "\n".join([every_log.text, out, err, *(str(w.message) for w in caught)])
    assert every_log.records or out or err, "nothing was captured: the log capture is not wired up"
    assert canary not in logged


def test_cli_outputs_record_the_inputs_sha256_never_its_name(xray_paths, tmp_path, capsys):
    """`purify` and `attack` wrote `"input": "<the file's name>"` into the config beside their PNG and
    onto stdout, and a file's name (Smith_John_MRN4711.jpeg) can identify a patient."""
    import hashlib
    import json

    from core.cli import main

    canary = f"PLCANARY{uuid.uuid4().hex[:16]}"
    image = tmp_path / canary / f"{canary}.jpeg"  # the full path, as given, carries it too
    image.parent.mkdir()
    image.write_bytes(xray_paths["NORMAL"][0].read_bytes())
    commands = {
        "purify": ["purify", str(image), "--purifier", "blur", "--threads", "1"],
        "attack": ["attack", str(image), "--classifier", "student_cnn", "--steps", "1", "--threads", "1"],
    }
    for name, args in commands.items():
        out = tmp_path / f"{name}.png"
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--out", str(out)])
        stdout, stderr = capsys.readouterr()
        written = out.with_suffix(".json").read_text()
        assert exit_info.value.code in (0, None), stderr
        assert canary not in stdout + stderr + written, name
        config = json.loads(written)
        assert config["input_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest() and config["input_size"], name
        assert json.loads(stdout) == config, name
