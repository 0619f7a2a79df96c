"""Audit the installed distributions of this interpreter for known vulnerabilities.

    .venv/bin/python scripts/audit_deps.py            # the venv's installed set
    .venv/bin/python scripts/audit_deps.py --offline  # skip pip-audit, offline sources only
    .venv/bin/python scripts/audit_deps.py --check requests==2.25.1   # an explicit set instead

Exit 0: verified, a live advisory service looked up every package and found nothing; 1: known
vulnerabilities; 3: NOT VERIFIED, nothing known but some packages were looked up in no live
service (they are named), so the absence of findings is not a clean bill.

First it asks real pip-audit (PyPI's JSON API, then OSV). Its verdict is used when a service
answers; where none answers (a closed network: CI here reaches only the package index), the
script says so in one line and falls back to two offline sources:
  * safety-db 2021.7.17 (PyUp's last free snapshot, advisories up to 2021-07-01; test extra);
  * scripts/advisories.json, a curated, dated snapshot of later advisories for this project's
    direct and important transitive dependencies.
Neither offline source is a live feed: an advisory newer than its date, or for a package the
curated file does not list, is not seen. Stdlib + packaging only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ADVISORIES = Path(__file__).with_name("advisories.json")
SERVICES = ("pypi", "osv")  # pip-audit's vulnerability services, tried in this order
PIP_AUDIT_TIMEOUT_S = 90  # per service; a closed network fails in seconds, this only caps a hang
NOT_VERIFIED = 3  # exit status: no finding, but not every package was looked up in a live source


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory: str  # "CVE-... (GHSA-...)"
    affected: str
    fixed: str
    summary: str
    source: str  # which database said so

    def line(self) -> str:
        fixed = f", fixed in {self.fixed}" if self.fixed else ""
        summary = f" - {self.summary}" if self.summary else ""
        return f"{self.package} {self.version}: {self.advisory} [{self.source}] affected {self.affected}{fixed}{summary}"


@dataclass
class Source:
    name: str
    dated: str
    advisories: dict[str, list[dict]]  # canonical package name -> entries; "specs": [(text, SpecifierSet)]
    size: int
    skipped: int = 0  # entries whose specifier packaging cannot parse


def installed() -> dict[str, str]:
    """{canonical name: version} of the distributions the running interpreter sees (first on sys.path wins)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonicalize_name(name) not in found:
            found[canonicalize_name(name)] = dist.version
    return dict(sorted(found.items()))


def editable() -> set[str]:
    """Canonical names of editable installs: local source (this project), on no advisory service."""
    found = set()
    for dist in metadata.distributions():
        origin = json.loads(dist.read_text("direct_url.json") or "{}")
        if origin.get("dir_info", {}).get("editable") and dist.metadata["Name"]:
            found.add(canonicalize_name(dist.metadata["Name"]))
    return found


def _parse_specs(texts: list[str]) -> list[tuple[str, SpecifierSet]]:
    return [(text, SpecifierSet(text)) for text in texts]


def load_curated(path: Path = ADVISORIES) -> Source:
    doc = json.loads(path.read_text())
    table: dict[str, list[dict]] = {}
    for entry in doc["advisories"]:
        ids = " ".join([entry["id"], *(f"({alias})" for alias in entry.get("aliases", []))])
        table.setdefault(canonicalize_name(entry["package"]), []).append(
            {
                "id": ids,
                "specs": _parse_specs(entry["affected"]),
                "fixed": ", ".join(entry["fixed"]),
                "summary": entry["summary"],
            }
        )
    return Source(f"curated {path.name}", f"compiled {doc['compiled']}", table, len(doc["advisories"]))


def load_safety_db() -> Source | None:
    """PyUp's safety-db snapshot, read from its files (importing the package opens a cwd-relative path)."""
    try:
        dist = metadata.distribution("safety-db")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("safety_db/insecure_full.json")))
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    stamp = raw.get("$meta", {}).get("timestamp")
    dated = datetime.fromtimestamp(stamp, UTC).date().isoformat() if stamp else "undated"
    table: dict[str, list[dict]] = {}
    size = skipped = 0
    for name, entries in raw.items():
        if name == "$meta":
            continue
        for entry in entries:
            size += 1
            try:
                specs = _parse_specs(entry.get("specs") or [entry["v"]])
            except (InvalidSpecifier, KeyError):
                skipped += 1
                continue
            ids = entry.get("cve") or ""
            ids = f"{ids} ({entry['id']})" if ids else entry["id"]
            table.setdefault(canonicalize_name(name), []).append(
                {"id": ids, "specs": specs, "fixed": "", "summary": " ".join(entry.get("advisory", "").split())[:160]}
            )
    return Source(f"safety-db {dist.version}", f"advisories up to {dated}", table, size, skipped)


def check(packages: dict[str, str], sources: list[Source]) -> tuple[list[Finding], list[str]]:
    """Findings for an explicit {name: version} set, and the packages whose version could not be parsed."""
    findings: list[Finding] = []
    unparsable: list[str] = []
    for name, text in sorted(packages.items()):
        try:
            version = Version(text)
        except InvalidVersion:
            unparsable.append(f"{name} {text}")
            continue
        for source in sources:
            for entry in source.advisories.get(canonicalize_name(name), []):
                hit = next((spec for spec, parsed in entry["specs"] if parsed.contains(version, prereleases=True)), None)
                if hit is not None:
                    findings.append(Finding(name, text, entry["id"], hit or "all versions", entry["fixed"], entry["summary"], source.name))
    return findings, unparsable


def offline_sources(curated: Source | None = None) -> list[Source]:
    """The curated file (main reads it first, so a bad --advisories is refused before any lookup) and safety-db."""
    sources = [curated or load_curated()]
    safety = load_safety_db()
    if safety is not None:
        sources.append(safety)
    return sources


def pip_audit(service: str, timeout: float = PIP_AUDIT_TIMEOUT_S) -> tuple[bool, list[Finding], set[str], str]:
    """Run pip-audit on this interpreter's environment with one service.

    Returns (answered, findings, names it could not audit, note). pip-audit exits 0 with "No known
    vulnerabilities found" even when every package was skipped because the service could not be
    reached, so "answered" means: at least one package was actually looked up.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip_audit",
        "-s",
        service,
        "-f",
        "json",
        "--progress-spinner",
        "off",
        "--skip-editable",
        "--aliases",
        "on",
        "--desc",
        "off",
        "--timeout",
        "15",
    ]
    try:
        run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, [], set(), f"{service}: no answer in {timeout:.0f} s"
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        host = re.search(r"host='([^']+)'", last)
        error = last.split(":", 1)[0].rsplit(".", 1)[-1]
        return False, [], set(), f"{service}: {error}, {host.group(1)} unreachable" if host else f"{service}: {last[:160]}"
    deps = report.get("dependencies", [])
    audited = [dep for dep in deps if "vulns" in dep]
    skipped = {canonicalize_name(dep["name"]) for dep in deps if "vulns" not in dep}
    if not audited:
        reason = next((dep.get("skip_reason", "") for dep in deps if "skip_reason" in dep), "")
        why = "the service said 'not found' for every one" if "not found" in reason.lower() else (reason[:120] or "none audited")
        return False, [], skipped, f"{service}: 0 of {len(deps)} packages looked up ({why})"
    findings = [
        Finding(
            dep["name"],
            dep["version"],
            " ".join([vuln["id"], *(f"({a})" for a in vuln.get("aliases", []))]),
            "see advisory",
            ", ".join(vuln.get("fix_versions", [])),
            "",
            f"pip-audit/{service}",
        )
        for dep in audited
        for vuln in dep["vulns"]
    ]
    return True, findings, skipped, f"{service}: {len(audited)} of {len(deps)} packages audited"


def pip_audit_version() -> str | None:
    try:
        return metadata.version("pip-audit")
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="do not try pip-audit's online services")
    parser.add_argument(
        "--check",
        action="append",
        metavar="NAME==VERSION",
        default=[],
        help="audit this explicit set instead of the installed one (offline sources); repeatable",
    )
    parser.add_argument("--advisories", type=Path, default=ADVISORIES, help="curated advisory file")
    args = parser.parse_args(argv)
    try:
        curated = load_curated(args.advisories)
    except OSError as error:
        parser.exit(2, f"error: --advisories {args.advisories}: {error.strerror or error}\n")
    except (ValueError, KeyError, TypeError) as error:
        parser.exit(2, f"error: --advisories {args.advisories}: not a curated advisory file ({type(error).__name__}: {error})\n")

    if args.check:
        try:
            packages = {canonicalize_name(n): v for n, v in (item.split("==", 1) for item in args.check)}
        except ValueError:
            parser.error("--check takes NAME==VERSION")
        print(f"Dependency audit of an explicit set of {len(packages)} package(s)")
    else:
        packages = installed()
        print(f"Dependency audit of {sys.executable} (Python {sys.version.split()[0]}): {len(packages)} installed distributions")

    findings: list[Finding] = []
    offline_for = packages  # the packages no live service looked up
    live = None
    why = "--check audits an explicit set offline" if args.check else "--offline asked no live source"
    if not args.check and not args.offline:
        why = "no live advisory source answered"
        version = pip_audit_version()
        if version is None:
            print("pip-audit: not installed (test extra); using the offline sources")
        else:
            notes = []
            for service in SERVICES:
                answered, found, skipped, note = pip_audit(service)
                notes.append(note)
                if answered:
                    findings += found
                    offline_for = {name: packages[name] for name in skipped if name in packages}
                    live = f"pip-audit/{service}"
                    print(f"pip-audit {version}: {note}")
                    break
            else:
                print(f"pip-audit {version}: no vulnerability service answered ({'; '.join(notes)}); falling back to the offline sources")
    local = sorted(editable() & set(offline_for)) if not args.check else []
    offline_for = {name: offline_for[name] for name in offline_for if name not in local}
    unchecked: list[str] = []
    if offline_for:
        sources = offline_sources(curated)
        if len(sources) == 1:
            print("safety-db: not installed (test extra); the curated file alone is checked")
        print("Offline sources (snapshots, not live feeds):")
        for source in sources:
            extra = f", {source.skipped} unparsable specifiers ignored" if source.skipped else ""
            print(f"  {source.name} ({source.dated}): {source.size} advisories for {len(source.advisories)} packages{extra}")
        offline, unparsable = check(offline_for, sources)
        findings += offline
        named = set().union(*(s.advisories for s in sources))
        unchecked = sorted(set(offline_for) - named)
        print(f"Checked offline: {len(offline_for)} packages, {len(offline_for) - len(unchecked)} of them named in an offline source")
        if unparsable:
            print(f"Not checked (version not PEP 440): {', '.join(unparsable)}")
    if local:
        print(f"Not looked up (editable installs, this machine's own source): {', '.join(local)}")
    if live is not None:
        why = f"{live} could not look up {len(offline_for)} package(s)"
    return verdict(findings, live, why, offline_for, unchecked)


def verdict(findings: list[Finding], live: str | None, why: str, offline_for: dict[str, str], unchecked: list[str]) -> int:
    """Print the verdict; a clean result counts only where a live service looked every package up."""
    if findings:
        print(f"FINDINGS: {len(findings)} known vulnerabilities in {len({f.package for f in findings})} package(s)")
        for finding in findings:
            print(f"  {finding.line()}")
        return 1
    if not offline_for:
        print(f"Findings: none (verified: {live} looked up every package)")
        return 0
    print(
        f"NOT VERIFIED: {why}; no known vulnerability in the offline snapshots, which are not live feeds "
        f"and name only {len(offline_for) - len(unchecked)} of these {len(offline_for)} packages"
    )
    if unchecked:
        print(f"Could not check {len(unchecked)} package(s) (in no source): {', '.join(unchecked)}")
    return NOT_VERIFIED


if __name__ == "__main__":
    sys.exit(main())
