"""The install keeps current streamlit and a patched requests despite torchattacks' old pin."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version

KNOWN_PIN = re.compile(r"^torchattacks 3\.5\.1 has requirement requests~=2\.25\.1, but you have requests [\d.]+\.$")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_pip_check_reports_only_the_known_torchattacks_pin():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    problems = [line for line in result.stdout.splitlines() if line.strip()]
    unexpected = [line for line in problems if not KNOWN_PIN.match(line)]
    assert unexpected == [], f"pip check found more than the known torchattacks pin: {unexpected}"


def test_current_streamlit_and_patched_requests_win():
    assert _version_tuple(version("streamlit")) >= (1, 50)
    assert _version_tuple(version("requests")) >= (2, 32, 4)  # CVE-2024-35195 / CVE-2024-47081 fixed


def test_torchattacks_imports_without_requests_pin():
    import torchattacks

    assert torchattacks.__version__ == "3.5.1"
    assert hasattr(torchattacks, "APGD") and hasattr(torchattacks, "AutoAttack")
