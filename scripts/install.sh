#!/usr/bin/env bash
# One-command install into ./.venv: the engine, the app, and (with --test) the test tools.
# torchattacks 3.5.1 pins requests~=2.25.1 but never imports requests, so it goes in last with
# --no-deps: current streamlit and a patched requests win, and that pin is the one thing
# `pip check` reports (tests/test_install.py holds exactly that). A new Python 3.11 venv starts with
# pip 23.2 and setuptools 65.5, both with known advisories, so both are upgraded first
# (scripts/audit_deps.py audits the result).
# The DICOM decoder plugins (python-gdcm, pylibjpeg and its openjpeg/rle plugins, pyjpegls) come with
# `-e .`; they pin nothing that `pip check` would report.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
case "$*" in
  "") ;;
  --test) extra="[test]" ;;
  *) echo "usage: bash scripts/install.sh [--test]   (unknown argument: $*)" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools
.venv/bin/python -m pip install -q -e ".${extra}"
.venv/bin/python -m pip install -q --no-deps "torchattacks==3.5.1"
