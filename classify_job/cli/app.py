"""The Typer application every command module registers on, and the one place typed library
errors become a line on stderr and a documented exit code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from classify_job import errors

app = typer.Typer(
    help="Train image classifiers on folder datasets and classify huge image trees into Parquet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # help is rich markup: a literal "[" is written "\[" (r"a \[train] table")
)

# Documented in the README ("Exit codes"); schedulers rely on them.
EXIT_CODES: dict[type[errors.ClassifyJobError], int] = {
    errors.InputError: 2,
    errors.DatasetError: 2,
    errors.BundleError: 3,
    errors.WeightsError: 3,
    errors.ExportError: 3,
    errors.OutputError: 4,
    errors.LockHeldError: 5,
    errors.ErrorRateExceeded: 6,
    errors.PromotionRefused: 7,
    errors.Interrupted: 75,
}


def _print_version(value: bool) -> None:
    if value:
        from classify_job import __version__

        typer.echo(f"classify-job {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Train image classifiers on folder datasets and classify huge image trees into Parquet."""


T = TypeVar("T")
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks.")]


def guarded(call: Callable[[], T], verbose: bool = False) -> T:
    """Run library code; turn its typed errors into one line on stderr and an exit code."""
    from rich.markup import escape

    from classify_job.cli.console import stderr

    try:
        return call()
    except errors.ClassifyJobError as exc:
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        stderr.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)  # one line
        raise typer.Exit(code) from None
    except Exception as exc:
        if verbose:
            raise
        stderr.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (rerun with --verbose)",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def invoke(call: Callable[[], T], verbose: bool) -> T:
    """Set up logging, then :func:`guarded`: what every command does first."""
    from classify_job.runtime import setup_logging

    setup_logging(verbose)
    return guarded(call, verbose)
