"""A full disk, without root or a mount: under a file-size limit, a write past the limit fails (EFBIG)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from core.errors import PurifyLabError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
try:
    exec(sys.argv[2])
except PurifyLabError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
"""


def run_on_a_full_disk(limit_bytes: int, code: str) -> subprocess.CompletedProcess:
    """Python `code` in a fresh process that can write no file past `limit_bytes`; a PurifyLabError is
    printed as the CLI prints it (exit 2), anything else is a traceback."""
    return subprocess.run([sys.executable, "-c", _UNDER_A_FILE_SIZE_LIMIT, str(limit_bytes), code], cwd=ROOT, capture_output=True, text=True, timeout=300)
