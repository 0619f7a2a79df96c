"""Every page of the Streamlit app loads without exceptions (AppTest, no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120)


def test_home_loads_and_says_what_the_lab_does(app):
    app.run()
    assert not app.exception
    assert app.title[0].value == "PurifyLab"
    assert any("not a diagnostic device" in md.value for md in app.markdown)
