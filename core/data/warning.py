"""Remarks of the data layer that a user must read (files skipped, no patient ids): one line each.

Python prints a warning as two lines, the second being our source line, which tells a user nothing;
under the CLI (`print_data_warnings_on_one_line`, called by its entry point) a `DataWarning` prints as
a single "warning: ..." line, like its "error: ..." lines. Other warnings keep Python's format, and a
library caller's warning format is left alone.
"""

from __future__ import annotations

import warnings


class DataWarning(UserWarning):
    """A data-layer remark, printed on one line without the source line."""


def print_data_warnings_on_one_line() -> None:
    """Format DataWarnings as one line from now on, in this process; idempotent."""
    python_format = warnings.formatwarning
    if getattr(python_format, "one_line_data_warnings", False):
        return

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        if issubclass(category, DataWarning):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    one_line.one_line_data_warnings = True  # type: ignore[attr-defined]
    warnings.formatwarning = one_line


def warn(message: str) -> None:
    """Warn the caller's caller (the code that asked for the data) with a DataWarning."""
    warnings.warn(message, DataWarning, stacklevel=3)


_warned_once: set[str] = set()


def warn_once(message: str) -> None:
    """`warn`, once per process for one text: a command lists its data several times (the check
    before a model is built, the load, the hash), and a remark on the files is worth one line.
    Python's own once-per-place memory is cleared whenever any code changes a warning filter."""
    if message not in _warned_once:
        _warned_once.add(message)
        warnings.warn(message, DataWarning, stacklevel=3)
