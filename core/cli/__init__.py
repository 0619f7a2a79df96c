"""`purifylab` command line (also `python -m core`).

Each concept keeps its commands in its own module with a `register(app, groups)` function, so the
top-level app stays a short list. Every command exits 0 on success and, on bad input, prints one
line to stderr and exits 2; Ctrl-C prints one line and exits 130.
"""

from __future__ import annotations

import functools
import sys

import typer
import typer.main

from core.errors import PurifyLabError

app = typer.Typer(
    name="purifylab",
    help="Attack and defend chest X-ray classifiers with diffusion purification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
groups = {
    "data": typer.Typer(help="Inspect and split data sets.", no_args_is_help=True),
    "train": typer.Typer(help="Train classifiers and diffusion purifiers.", no_args_is_help=True),
}
for name, group in groups.items():
    app.add_typer(group, name=name)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"purifylab {version('purifylab')}")
        except PackageNotFoundError:
            typer.echo("purifylab (not installed as a package: run from the source tree)")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
) -> None:
    """Attack and defend chest X-ray classifiers with diffusion purification."""
    from core.paths import check_checkout

    check_checkout()


def set_threads(threads: int | None) -> None:
    """--threads for any command: torch's intra-op threads (None keeps torch's default; the option
    itself refuses a count below 1)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


@functools.cache  # once per process: main() called again (the tests) would add every command again, and each copy slows get_command
def _register_commands() -> None:
    from core.cli import (
        bench_commands,
        certify_commands,
        classifier_commands,
        data_commands,
        purify_commands,
        serve_commands,
        table_commands,
    )

    for module in (
        data_commands,
        classifier_commands,
        certify_commands,
        purify_commands,
        table_commands,
        bench_commands,
        serve_commands,
    ):
        module.register(app, groups)


def _click_exceptions():
    """click's exception classes: typer >= 0.2x vendors its own click, older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


INTERRUPTED = "interrupted"


def _say_interrupted(command) -> None:
    """Ctrl-C in `command` (and its subcommands) ends with one line and exit 130: typer turns it into a
    silent 130, so train and certify printed nothing. A command that says how to pick its work up
    (core.cli.preflight.resume_hint) has ended the interrupt before this sees it."""
    for subcommand in getattr(command, "commands", {}).values():
        _say_interrupted(subcommand)
    callback = command.callback
    if callback is None:
        return

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            raise typer.Exit(130) from None

    command.callback = run


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run the CLI on `argv` (default sys.argv[1:]); `prog_name` names it in usage lines (default: as invoked)."""
    try:
        _main(argv, prog_name)
    except KeyboardInterrupt:  # before any command runs: while the commands are imported
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)


def _main(argv: list[str] | None, prog_name: str | None) -> None:
    from core.data.warning import print_data_warnings_on_one_line

    exceptions = _click_exceptions()
    print_data_warnings_on_one_line()
    _register_commands()
    command = typer.main.get_command(app)
    _say_interrupted(command)
    try:  # not standalone: click's usage errors reach us, to be said in one line like ours
        exit_code = command(args=argv, prog_name=prog_name, standalone_mode=False)
    except getattr(exceptions, "NoArgsIsHelpError", ()) as error:  # `purifylab` or `purifylab data` alone: the help, as before
        if error.format_message().strip():  # with rich, the help was printed already
            typer.echo(error.format_message())
        sys.exit(error.exit_code)
    except exceptions.ClickException as error:  # a missing, unknown or malformed option or command, in click's words
        where = f"{error.ctx.command_path}: " if getattr(error, "ctx", None) is not None else ""
        print(f"error: {where}{' '.join(error.format_message().split())}", file=sys.stderr)
        sys.exit(error.exit_code)
    except PurifyLabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(exit_code or 0)
