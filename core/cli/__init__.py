"""`purifylab` command line (also `python -m core`).

Each concept keeps its commands in its own module with a `register(app, groups)` function, so the
top-level app stays a short list. Every command exits 0 on success and, on bad input, prints one
line to stderr and exits 2.
"""

from __future__ import annotations

import sys

import typer

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


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run the CLI on `argv` (default sys.argv[1:]); `prog_name` names it in usage lines (default: as invoked)."""
    from core.data.warning import print_data_warnings_on_one_line

    exceptions = _click_exceptions()
    print_data_warnings_on_one_line()
    _register_commands()
    try:  # not standalone: click's usage errors reach us, to be said in one line like ours
        exit_code = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except getattr(exceptions, "NoArgsIsHelpError", ()) as error:  # `purifylab` or `purifylab data` alone: the help, as before
        if error.format_message().strip():  # with rich, the help was printed already
            typer.echo(error.format_message())
        sys.exit(error.exit_code)
    except exceptions.ClickException as error:  # a missing, unknown or malformed option or command, in click's words
        where = f"{error.ctx.command_path}: " if getattr(error, "ctx", None) is not None else ""
        print(f"error: {where}{' '.join(error.format_message().split())}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except PurifyLabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(exit_code or 0)
