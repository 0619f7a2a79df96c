"""The command line the standalone benchmarks share, and the rule for replacing a report.

Torch-free, so that a bad option or --out is refused in one line before torch is imported or
anything is measured, as the CLI refuses bad input (exit 2, one `error:` line).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from core.paths import REPO_ROOT, RESULTS_DIR

REPORTS_DIR = RESULTS_DIR / "benchmarks"  # every benchmark's default report folder; PURIFYLAB_RESULTS moves it
# Recorded beside a report but no setting of what it measured: the command line as typed, where the
# report goes, and the load test's watchdog limits, which only stop a run.
NOT_SETTINGS = frozenset({"command", "out", "timeout", "action_timeout"})


def refuse(message: str, status: int = 2) -> NoReturn:
    """Bad input: one `error:` line on stderr and exit 2, the CLI's convention."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


class BenchmarkParser(argparse.ArgumentParser):
    """argparse with the CLI's refusal: one `error:` line and exit 2, not a usage block."""

    def error(self, message: str) -> NoReturn:
        refuse(message)


def positive_int(text: str) -> int:
    """An argparse type for counts such as --threads and --repeats: 0 or less would fail (or measure
    nothing) only after the imports and model builds."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of positive_int, e.g. the thread counts --threads 1,2 times in turn."""
    return [positive_int(part.strip()) for part in text.split(",")]


def add_threads_option(parser: argparse.ArgumentParser, default: int | None, help: str = "torch threads") -> None:
    """--threads, refused in one line when not a whole number >= 1."""
    parser.add_argument("--threads", type=positive_int, default=default, help=help if default is None else f"{help} (default {default})")


def add_report_options(parser: argparse.ArgumentParser, default_out: Path) -> None:
    """--out and --overwrite, as every standalone benchmark takes them."""
    parser.add_argument("--out", type=Path, default=default_out, help=f"JSON report (default {default_out}), its config beside it")
    parser.add_argument("--overwrite", action="store_true", help="replace a report purifylab did not write (no NAME.config.json beside it)")


def invocation() -> str:
    """The command line that is running, as a user types it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    arguments = " ".join(sys.argv[1:])
    if not script.is_relative_to(REPO_ROOT):
        return " ".join(sys.argv)
    relative = script.relative_to(REPO_ROOT)
    program = "python -m " + ".".join(relative.with_suffix("").parts) if relative.parts[0] == "benchmarks" else f"python {relative}"
    return f"{program} {arguments}".strip()


def report_options(args: argparse.Namespace) -> dict:
    """The options a standalone report's config records (paths as committed outputs record them)."""
    from core.data.locations import portable_path

    return {key: portable_path(value) if isinstance(value, Path) else value for key, value in vars(args).items() if key != "overwrite"}


def check_report_out(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Before any measuring: the report may replace only one this tool wrote, and only one this
    benchmark measured with the same settings, unless --overwrite (the CLI's rule,
    core.cli.preflight.check_output, and bench's); a bad --out exits 2 with one line."""
    from core.cli.preflight import check_output
    from core.errors import PurifyLabError

    try:
        check_output(args.out, "--out", overwrite=args.overwrite, suffix=".json", creates_folder=True)
        check_same_settings(args.out, {"command": invocation(), **report_options(args)}, args.overwrite, parser)
    except PurifyLabError as error:
        refuse(str(error))


def _reconstructed_settings(command: str, parser: argparse.ArgumentParser) -> dict:
    """Every setting of a run whose config was reconstructed (session 21) from its command line, which
    left the rest at their defaults: the config itself records only what that line typed."""
    from core.cli.reporting import command_program

    _, start = command_program(command)
    return report_options(parser.parse_args(shlex.split(command)[start:]))


def check_same_settings(out: Path, config: dict, overwrite: bool = False, parser: argparse.ArgumentParser | None = None) -> None:
    """Refuse, before any measuring, to replace a report measured with other settings: a run of one
    section or purifier into the default --out would swap the committed full report for a part of it.
    `config` is what will be written beside the report; it is compared with the config beside `out`
    (which check_output has found to be purifylab's) on the keys both record, so a setting added since,
    or a note, does not count, nor do the command line and --out that wrote it (the same settings typed
    another way; `NOT_SETTINGS`). Another benchmark's report is refused whatever its settings, and a
    reconstructed config's settings are read from its command line with `parser` (a standalone
    benchmark's own). The same settings rerun in place; --overwrite replaces anything."""
    from core.cli.reporting import command_program, config_path
    from core.errors import PurifyLabError

    if overwrite or not out.exists():
        return
    before = json.loads(config_path(out).read_text())
    (ran, _), (runs, _) = command_program(before.get("command")), command_program(config.get("command"))
    if ran != runs:
        raise PurifyLabError(f"--out {out} holds a report of {ran or 'another tool'}, not of {runs}; pass --overwrite to replace it or choose another --out")
    if parser is not None and "reconstructed" in before:
        before = {**before, **_reconstructed_settings(before["command"], parser)}
    after = json.loads(json.dumps(config))  # JSON types: tuples as lists
    changed = sorted(key for key in set(before) & set(after) - NOT_SETTINGS if before[key] != after[key])
    if changed:
        shown = ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "")
        raise PurifyLabError(
            f"--out {out} holds a report measured with other settings ({shown} differ); pass --overwrite to replace it or choose another --out"
        )
