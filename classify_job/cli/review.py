"""``review export`` and ``review import``: the review queue out to people, their corrections back
into a training folder."""

from __future__ import annotations

import typer

from classify_job.cli.app import app

review_app = typer.Typer(
    help="Send the review queue to people and take their corrections back.", no_args_is_help=True
)
app.add_typer(review_app, name="review")
