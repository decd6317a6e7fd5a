"""``classify`` and ``merge``: a tree into OUT/predictions, and shard outputs into one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from classify_job.cli.app import Verbose, app, invoke
from classify_job.cli.commands import Command, settings_command


@app.command(
    cls=settings_command("classify_job.classify.config:ClassifyConfig", fields={"ext": "extensions"})
)
def classify(
    input_dir: Annotated[Path | None, typer.Argument(help="Directory tree of images to classify.")] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Model bundle directory.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help=r"TOML job file with a \[classify] table.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per model call.")] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding threads.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Classes kept in top_labels and top_probs.")] = None,
    shard: Annotated[
        str | None, typer.Option(help="Classify only shard K of N, written K/N (0-based).")
    ] = None,
    fresh: Annotated[
        bool | None, typer.Option("--fresh", help="Ignore and delete earlier output in OUT.")
    ] = None,
    prune: Annotated[
        bool | None, typer.Option("--prune", help="Remove the rows of files that are gone from the tree.")
    ] = None,
    ext: Annotated[str | None, typer.Option(help="Comma-separated extensions, e.g. jpg,png.")] = None,
    follow_symlinks: Annotated[bool | None, typer.Option("--follow-symlinks/--no-follow-symlinks")] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(help="Exit 6 when more than this fraction of files fail (0-1).")
    ] = None,
    rows_per_part: Annotated[int | None, typer.Option(help="Rows per Parquet part file.")] = None,
    engine: Annotated[str | None, typer.Option(help="local (this process) or ray (Ray Data).")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help=r"Ray cluster address. \[default: start a local one]")
    ] = None,
    ray_actors: Annotated[int | None, typer.Option(help="Model actors for --engine ray.")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="auto, onnx, onnx-int8, openvino or keras: what runs the model "
            "(auto takes int8 only where it measured faster)."
        ),
    ] = None,
    runtime_threads: Annotated[int | None, typer.Option(help="Threads the runtime computes with.")] = None,
    drift_runs: Annotated[
        int | None, typer.Option(help="Earlier runs this run's rows are compared with.")
    ] = None,
    drift_min_rows: Annotated[int | None, typer.Option(help="Rows each side needs for a drift flag.")] = None,
    verbose: Verbose = False,
) -> None:
    """Classify every image under INPUT_DIR into OUT/predictions (Parquet) and OUT/summary.json.

    Rerunning with the same OUT resumes: files that already have a row for this model are skipped.
    """
    from classify_job.runtime import stop_on_signals

    def settings():
        from classify_job.classify.config import ClassifyConfig

        resolved = ClassifyConfig.resolve(
            config, input_dir=input_dir, model=model, out=out, batch_size=batch_size, workers=workers,
            top_k=top_k, shard=shard, fresh=fresh, prune=prune, extensions=ext,
            follow_symlinks=follow_symlinks, max_error_rate=max_error_rate, rows_per_part=rows_per_part,
            engine=engine, ray_address=ray_address, ray_actors=ray_actors, runtime=runtime,
            runtime_threads=runtime_threads, drift_runs=drift_runs, drift_min_rows=drift_min_rows,
        )  # fmt: skip
        _stop_if_asked(stop)
        return resolved

    # From here to the end a SIGTERM (or a first Ctrl-C) is a stop request, also while settings are
    # read and libraries import before the loop: the run then exits 75 (Interrupted) with one line.
    with stop_on_signals() as stop:
        invoke(lambda: _classify(settings(), stop), verbose)


def _stop_if_asked(stop) -> None:
    from classify_job.errors import Interrupted

    if stop.is_set():
        raise Interrupted("stopped before the run started; nothing was written, rerun to start it")


def _classify(config, stop) -> None:
    from classify_job.classify.pipeline import run_classify
    from classify_job.cli.console import progress_reporter, stdout, summary_table, tree_notes

    _stop_if_asked(stop)  # the imports above take a while
    with progress_reporter(config.log_every_s) as on_progress:
        result = run_classify(config, on_progress, stop)
    p = result.progress
    logging.getLogger("classify_job").info(
        "run %s done: %d classified (%d errors), %d already done, %.1f img/s",
        *(result.run_id, p.classified, p.errors, p.skipped, p.images_per_second),
        extra={"fields": {"event": "run_done", **p.fields()}},
    )
    if p.classified == 0:
        stdout.print(
            f"Nothing to classify: all {p.skipped} files already have a row in {result.out}.",
            markup=False,
            soft_wrap=True,
        )
    for line in tree_notes(result.record):
        stdout.print(line, markup=False, soft_wrap=True)
    if result.summary:
        stdout.print(summary_table(result.summary))
    stdout.print(
        f"Predictions: {result.out / 'predictions'}\nSummary:     {result.out / 'summary.json'}\n"
        f"Report:      {result.out / 'report.html'}",
        markup=False,
        soft_wrap=True,
    )


@app.command(cls=Command)
def merge(
    sources: Annotated[list[Path], typer.Argument(help="Output directories of shard runs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the merged dataset.")],
    allow_missing_shards: Annotated[
        bool, typer.Option("--allow-missing-shards", help="Merge even if some shards are absent.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Merge shard outputs into OUT: every file once, one model, one summary."""
    from classify_job.classify.merge import merge_outputs
    from classify_job.cli.console import stdout, summary_table

    result = invoke(lambda: merge_outputs(sources, out, allow_missing_shards), verbose)
    stdout.print(summary_table(result.summary))
    stdout.print(
        f"Merged {len(sources)} outputs ({result.parts} parts) into {out}", markup=False, soft_wrap=True
    )
