"""The install keeps current streamlit and a patched requests despite torchattacks' old pin, and audits clean."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from PIL import Image

KNOWN_PIN = re.compile(r"^torchattacks 3\.5\.1 has requirement requests~=2\.25\.1, but you have requests [\d.]+\.$")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_pip_check_reports_only_the_known_torchattacks_pin():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], check=False, capture_output=True, text=True, timeout=120)
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


# Dependency audit (scripts/audit_deps.py): pip-audit when a vulnerability service answers, else the
# offline safety-db snapshot plus the curated, dated scripts/advisories.json.

AUDIT = Path(__file__).resolve().parents[1] / "scripts" / "audit_deps.py"
ADVISORY_ID = re.compile(r"^(CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3}|PYSEC-\d{4}-\d+)$")


@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("audit_deps", AUDIT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_deps"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("audit_deps", None)


def test_audit_of_the_installed_set_finds_nothing_and_says_whether_that_is_verified():
    result = subprocess.run([sys.executable, str(AUDIT)], check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    if result.returncode == 0:  # a live service looked every package up
        assert "Findings: none (verified: pip-audit/" in result.stdout
    else:  # a closed network (CI here): the offline snapshots, named with their dates, and no green
        assert "NOT VERIFIED: no live advisory source answered" in result.stdout, result.stdout
        assert "compiled 20" in result.stdout and "Could not check" in result.stdout
        assert "Findings: none" not in result.stdout


@pytest.mark.parametrize(
    ("answer", "status", "verdict"),
    [
        ((False, [], set(), "pypi: unreachable"), 3, "NOT VERIFIED: no live advisory source answered;"),
        ((True, [], {"left-pad-xyz"}, "pypi: 1 of 2 packages audited"), 3, "NOT VERIFIED: pip-audit/pypi could not look up 1 package(s);"),
        ((True, [], set(), "pypi: 2 of 2 packages audited"), 0, "Findings: none (verified: pip-audit/pypi looked up every package)"),
    ],
)
def test_audit_is_green_only_when_a_live_service_looked_every_package_up(audit, monkeypatch, capsys, answer, status, verdict):
    monkeypatch.setattr(audit, "installed", lambda: {"requests": version("requests"), "left-pad-xyz": "1.0"})
    monkeypatch.setattr(audit, "pip_audit", lambda service: answer)
    monkeypatch.setattr(audit, "editable", set)
    assert audit.main([]) == status
    out = capsys.readouterr().out
    assert verdict in out
    if status == 3:  # the package no source names is listed as not checked
        assert "Could not check 1 package(s) (in no source): left-pad-xyz" in out


def test_an_explicit_clean_set_is_not_verified_either(audit, capsys):
    assert audit.main(["--check", f"requests=={version('requests')}"]) == 3
    assert "NOT VERIFIED: --check audits an explicit set offline;" in capsys.readouterr().out


def test_audit_flags_the_requests_that_torchattacks_pins(audit):
    findings, unparsable = audit.check({"requests": "2.25.1", "torchattacks": "3.5.1"}, audit.offline_sources())
    ids = " ".join(f.advisory for f in findings if f.package == "requests")
    for cve in ("CVE-2023-32681", "CVE-2024-35195", "CVE-2024-47081"):
        assert cve in ids
    assert unparsable == []
    clean, _ = audit.check({"requests": version("requests")}, audit.offline_sources())
    assert clean == []


def test_audit_cli_exits_non_zero_on_a_finding():
    result = subprocess.run([sys.executable, str(AUDIT), "--check", "requests==2.25.1"], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "requests 2.25.1: CVE-2023-32681" in result.stdout


def test_audit_flags_the_pip_and_setuptools_a_python_3_11_venv_starts_with(audit):
    # Why scripts/install.sh upgrades both before installing anything.
    findings, _ = audit.check({"pip": "23.2.1", "setuptools": "65.5.0"}, audit.offline_sources())
    ids = {f.advisory.split()[0] for f in findings}
    assert {"CVE-2023-5752", "CVE-2022-40897", "CVE-2024-6345", "CVE-2025-47273"} <= ids


def test_safety_db_snapshot_is_installed_and_read(audit):
    safety = audit.load_safety_db()
    assert safety is not None and safety.size > 1000
    assert safety.dated == "advisories up to 2021-07-01"


def test_pip_audit_that_looked_nothing_up_is_not_a_clean_verdict(audit, monkeypatch):
    # pip-audit prints "No known vulnerabilities found" and exits 0 when the service 404s for every package.
    report = {"dependencies": [{"name": "requests", "skip_reason": "Dependency not found on PyPI and could not be audited"}]}
    fake = subprocess.CompletedProcess([], 0, stdout=json.dumps(report), stderr="No known vulnerabilities found\n")
    monkeypatch.setattr(audit.subprocess, "run", lambda *a, **k: fake)
    answered, findings, skipped, _ = audit.pip_audit("pypi")
    assert not answered and findings == [] and skipped == {"requests"}


def test_advisory_file_is_well_formed():
    doc = json.loads((AUDIT.parent / "advisories.json").read_text())
    date.fromisoformat(doc["compiled"])
    assert "curated" in doc["kind"] and "not a live feed" in doc["note"]
    seen = set()
    for entry in doc["advisories"]:
        where = f"{entry['package']} {entry['id']}"
        assert ADVISORY_ID.match(entry["id"]), where
        assert all(ADVISORY_ID.match(alias) for alias in entry["aliases"]), where
        assert (canonicalize_name(entry["package"]), entry["id"]) not in seen, f"duplicate {where}"
        seen.add((canonicalize_name(entry["package"]), entry["id"]))
        assert entry["affected"] and len(entry["fixed"]) == len(entry["affected"]), where
        ranges = [SpecifierSet(text) for text in entry["affected"]]
        for specs, fixed in zip(ranges, entry["fixed"], strict=True):
            fixed = Version(fixed)
            assert not any(r.contains(fixed, prereleases=True) for r in ranges), f"{where}: {fixed} is in an affected range"
            assert any(s.operator == "<" and Version(s.version) == fixed for s in specs), f"{where}: range not bounded by {fixed}"
        assert entry["summary"].strip() and "\n" not in entry["summary"], where
        assert entry["source"].startswith("https://"), where
    covered = {canonicalize_name(e["package"]) for e in doc["advisories"]}
    assert {"requests", "urllib3", "pillow", "torch", "pip", "setuptools"} <= covered


def test_a_missing_torchattacks_is_one_line_naming_the_install_step(tmp_path):
    for name in ("NORMAL", "PNEUMONIA"):  # a data set by its layout (nothing is decoded before the refusal)
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / name / "x.png")
    code = f"import sys; sys.modules['torchattacks'] = None\nfrom core.cli import main\nmain(['evaluate', '--data', {str(tmp_path)!r}, '--attack', 'pgd'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: torchattacks is not installed: run `pip install --no-deps torchattacks==3.5.1` (scripts/install.sh does this step)"
    ]
