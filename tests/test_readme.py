"""The README's Python snippet runs as written (from the repository root, on the real test X-rays)."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_api_snippet_runs(xray_test_dir, capsys):
    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"### The same from Python.*?```python\n(.*?)```", readme, re.S).group(1)
    cwd = os.getcwd()
    os.chdir(REPO)  # the snippet names the data relative to the repository, as a reader runs it
    try:
        exec(compile(snippet, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert re.fullmatch(r"white-box PGD-10, EOT 2, 8/255: \d+% one draw, \d+% worst of 2\n", printed)
