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


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run the CLI on `argv` (default sys.argv[1:]); `prog_name` names it in usage lines (default: as invoked)."""
    from core.data.warning import print_data_warnings_on_one_line

    print_data_warnings_on_one_line()
    _register_commands()
    try:
        app(args=argv, prog_name=prog_name, standalone_mode=True)
    except PurifyLabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
