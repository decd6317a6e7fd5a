"""``report`` and ``tag``: what a classify run's Parquet output says, for people and for a catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from classify_job.cli.app import Verbose, app, invoke
from classify_job.cli.commands import Command, settings_command
from classify_job.decisions.rule import DEFAULT_MARGIN, DEFAULT_THRESHOLD

Threshold = Annotated[float, typer.Option(help="Review images under this confidence.")]
Margin = Annotated[
    float, typer.Option(help="Review images whose top two probabilities are closer than this.")
]


@app.command(cls=Command)
def report(
    out: Annotated[Path, typer.Argument(help="Output directory of a classify run.")],
    threshold: Threshold = DEFAULT_THRESHOLD,
    margin: Margin = DEFAULT_MARGIN,
    verbose: Verbose = False,
) -> None:
    """Rebuild OUT/summary.json, OUT/summary.md and OUT/report.html from the Parquet predictions alone."""
    from classify_job.cli.console import stdout
    from classify_job.report.html import write_reports
    from classify_job.report.summary import render_markdown

    summary, page = invoke(lambda: write_reports(out, threshold=threshold, margin=margin), verbose)
    stdout.print(render_markdown(summary), highlight=False, markup=False)
    stdout.print(f"Report: {page}", markup=False, soft_wrap=True)


@app.command(cls=settings_command("classify_job.report.tagging:TagJob"))
def tag(
    out: Annotated[Path | None, typer.Argument(help="Output directory of a classify run.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalog to tag: a .csv or .parquet file.")] = None,
    key_column: Annotated[str | None, typer.Option(help="Catalog column holding the key, e.g. sku.")] = None,
    key_from: Annotated[
        str | None, typer.Option(help="Regex searched in each relpath; group 'key' (else 1) is the key.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Rows without a stored decision: review below this."),
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(help="Rows without a stored decision: review when the top two are closer."),
    ] = None,
    dest: Annotated[
        Path | None, typer.Option(help=r"Directory for the tagged catalog. \[default: OUT]")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help=r"TOML job file with a \[tag] table.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Add label, confidence, needs_review and model_id to every catalog row from OUT's predictions."""
    from classify_job.cli.console import stdout
    from classify_job.report.tagging import TagJob, tag_catalog

    def tagged():
        job = TagJob.resolve(
            config, out=out, catalog=catalog, key_column=key_column, key_from=key_from, dest=dest,
            threshold=threshold, margin=margin,
        )  # fmt: skip
        return tag_catalog(
            job.out, job.catalog, job.key_column, job.key_from, job.dest, job.threshold, job.margin
        )

    result = invoke(tagged, verbose)
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.counts.items())
    stdout.print(f"Tagged: {result.tagged}\nReview: {result.review}\n{counts}", markup=False, soft_wrap=True)
