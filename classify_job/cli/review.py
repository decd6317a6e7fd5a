"""``review export`` and ``review import``: the review queue out to people, their corrections back
into a training folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from classify_job.cli.app import Verbose, app, invoke
from classify_job.cli.commands import Command

review_app = typer.Typer(
    help="Send the review queue to people and take their corrections back.", no_args_is_help=True
)
app.add_typer(review_app, name="review")

_SHOWN_PROBLEMS = 20
log = logging.getLogger(__name__)


@review_app.command("export", cls=Command)
def export(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Output directory of a classify run.")],
    to: Annotated[Path, typer.Option("--to", metavar="DIR", help="New folder to write the review tree to.")],
    limit: Annotated[
        int | None, typer.Option(help=r"At most N items to review (the least confident). \[default: all]")
    ] = None,
    audit: Annotated[int, typer.Option(help="Also N accepted rows, drawn at random, as spot checks.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the audit draw.")] = 0,
    copy: Annotated[
        bool, typer.Option("--copy/--link", help="Copy the images, or link to them (symbolic links).")
    ] = True,
    verbose: Verbose = False,
) -> None:
    """Write the rows of OUT that need review, lowest confidence first, to a folder tree
    (--to DIR/<predicted_label>/, manifest.csv, _reject/) and a Label Studio task file."""
    from classify_job.cli.console import stdout
    from classify_job.loop.review_export import export_review

    result = invoke(lambda: export_review(out, to, limit, audit, seed, link=not copy), verbose)
    stdout.print(_export_table(result))
    stdout.print(
        f"{result.review} of {result.queue_total} rows needing review, and {result.audit} accepted for "
        f"audit, written to {result.folder}\nManifest: {result.manifest}\n"
        f"Label Studio: {result.label_studio} (tasks.json, config.xml)\n"
        f"Move each wrong entry to its class folder, or to _reject/ when it is none of them; then "
        f"`classify-job review import {result.folder} --into DATA`.",
        markup=False, soft_wrap=True,
    )  # fmt: skip
    _problems([f"{relpath}: {reason}; not exported" for relpath, reason in result.skipped])


@review_app.command("import", cls=Command)
def import_(
    review_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="Review folder written by `review export`.")
    ],
    into: Annotated[
        Path, typer.Option("--into", metavar="DATA", help="Folder dataset to add the images to.")
    ],
    allow_new_classes: Annotated[
        bool, typer.Option("--allow-new-classes", help="Create class folders DATA does not have yet.")
    ] = False,
    label_studio: Annotated[
        Path | None,
        typer.Option(
            "--label-studio",
            metavar="EXPORT.json",
            help="Take the classes from this Label Studio JSON export.",
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Add each reviewed image to DATA/<class>/<sha256[:16]>.<ext>; rejected items are only logged.

    By content: importing twice adds nothing, and an image under another class is moved. Symbolic
    links (but those `review export --link` wrote) and files whose bytes are not the manifest's
    are refused: counted, named, never copied.
    """
    from classify_job.cli.console import stdout
    from classify_job.loop.review_import import import_review

    result = invoke(lambda: import_review(review_dir, into, allow_new_classes, label_studio), verbose)
    stdout.print(_balance_table(result))
    shown = ("added", "relabelled", "unchanged", "confirmed", "corrected", "rejected", "left out", "refused")
    stdout.print(", ".join(f"{name} {result.counts[name]}" for name in shown), markup=False)
    stdout.print(f"Log: {result.log}", markup=False, soft_wrap=True)
    if result.counts["refused"]:
        log.warning(
            "%d review entries refused (symbolic links, or bytes other than the manifest's); "
            "nothing of them was imported",
            result.counts["refused"],
        )
    _problems(result.problems)


def _export_table(result: Any):
    from rich.table import Table

    table = Table(title=f"review export: {result.folder}")
    for column in ("predicted label", "review", "audit"):
        table.add_column(column, justify="left" if column == "predicted label" else "right")
    for label, (review, audit) in result.per_label.items():
        table.add_row(label, str(review), str(audit))
    return table


def _balance_table(result: Any):
    from rich.table import Table

    table = Table(title=f"{result.data}: class balance")
    for column in ("class", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label in sorted(set(result.before) | set(result.after)):
        before, after = result.before.get(label, 0), result.after.get(label, 0)
        table.add_row(label, str(before), str(after), f"{after - before:+d}")
    return table


def _problems(lines: Any) -> None:
    from classify_job.cli.console import stdout

    lines = list(lines)
    for line in lines[:_SHOWN_PROBLEMS]:
        stdout.print(f"  {line}", markup=False, soft_wrap=True)
    if len(lines) > _SHOWN_PROBLEMS:
        stdout.print(f"  ... and {len(lines) - _SHOWN_PROBLEMS} more", markup=False)
