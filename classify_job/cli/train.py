"""``train``, ``evaluate``, ``check-data``, ``export``, ``calibrate`` and ``tune``: folder datasets
in, model bundles and reports out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from classify_job.cli.app import Verbose, app, invoke
from classify_job.cli.commands import Command, settings_command
from classify_job.decisions.rule import DEFAULT_TARGET_PRECISION as TARGET

TRAIN_CONFIG = "classify_job.train.config:TrainConfig"
PRECISION_SCOPE = typer.Option(
    help="class: the target precision holds for each class; overall: for all accepted labels together "
    "(one pooled threshold, a weaker guarantee for classes with little evidence)."
)


def image_sizes() -> str:
    """The input size each architecture trains at when --image-size is not given."""
    from classify_job.train.architectures import ARCHITECTURES

    return ", ".join(f"{a.image_size[0]} for {name}" for name, a in ARCHITECTURES.items())


def tune_image_size() -> str:
    """The input size tune trains at when --image-size is not given (tune fine-tunes efficientnet_lite0)."""
    from classify_job.train.architectures import ARCHITECTURES

    return str(ARCHITECTURES["efficientnet_lite0"].image_size[0])


@app.command(cls=settings_command(TRAIN_CONFIG, image_size=image_sizes))
def train(
    data: Annotated[Path | None, typer.Argument(help="Folder dataset: one subfolder per class.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Bundle directory, e.g. models/NAME.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help=r"TOML job file with a \[train] table.")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="cnn or efficientnet_lite0.")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per training step.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size.")] = None,
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
    target_precision: Annotated[
        float | None,
        typer.Option(help="Precision auto-accepted labels must reach, per class."),
    ] = None,
    augmented_views: Annotated[
        int | None, typer.Option(help="efficientnet_lite0: augmented copies per training image to cache.")
    ] = None,
    tta: Annotated[
        str | None,
        typer.Option(
            help="flip serves the mean over each image and its left-right mirror (twice the compute "
            "per image); none (the default) the image alone. Not for text or handed products.",
        ),
    ] = None,
    budget_minutes: Annotated[
        float | None,
        typer.Option(help="Size the epochs (and the cosine schedule) to this many minutes of fitting."),
    ] = None,
    int8: Annotated[
        bool | None,
        typer.Option(
            "--int8/--no-int8",
            help="Also write the int8 graph, kept if it passes its gate; classify's auto runtime takes it "
            "only on a CPU where it measured faster.",
        ),
    ] = None,
    precision_scope: Annotated[str | None, PRECISION_SCOPE] = None,
    attributes: Annotated[
        str | None,
        typer.Option(
            help='Decide attributes of the class names too, e.g. "gender=male,female garment=trousers,jeans".'
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Train a classifier on DATA and write a model bundle (model, labels, metrics, plots) to --out."""
    from classify_job.train.config import TrainConfig

    arch_flags = {"fine_tune_blocks": fine_tune_blocks, "augmented_views": augmented_views, "tta": tta}
    invoke(
        lambda: _train(
            TrainConfig.resolve(
                config, data_dir=data, out_dir=out, arch=arch, epochs=epochs, batch_size=batch_size,
                image_size=image_size, color_mode=color_mode, seed=seed, val_split=val_split,
                test_split=test_split, learning_rate=learning_rate, overwrite=overwrite,
                target_precision=target_precision, budget_minutes=budget_minutes, int8=int8,
                precision_scope=precision_scope, attributes=attributes,
                arch_options={k: v for k, v in arch_flags.items() if v is not None} or None,
            )
        ),
        verbose,
    )  # fmt: skip


def _train(config) -> None:
    from classify_job.cli.console import decision_table, epoch_reporter, evaluation_table, stdout
    from classify_job.train.pipeline import train

    with epoch_reporter(config.epochs) as on_epoch:
        result = train(config, on_epoch)
    stdout.print(evaluation_table(result.report))
    stdout.print(
        f"Bundle: {result.bundle_dir} ({result.spec.model_id}); {len(result.history)} epochs, "
        f"{result.seconds_per_epoch:.1f} s/epoch, {result.wall_time_s:.0f} s in all; "
        f"{len(result.bad_files)} unreadable files skipped",
        markup=False, soft_wrap=True,
    )  # fmt: skip
    if result.spec.calibration:
        stdout.print(decision_table(result.spec))
    if result.export_warning:
        stdout.print(
            f"warning: no exported graph, classify will use Keras: {result.export_warning}", markup=False
        )


@app.command(cls=settings_command("classify_job.train.evaluate:EvaluateJob"))
def evaluate(
    bundle: Annotated[Path | None, typer.Argument(help="Model bundle directory.")] = None,
    data: Annotated[Path | None, typer.Argument(help="Labelled folder dataset (class subfolders).")] = None,
    split: Annotated[str | None, typer.Option(help="auto, all, train, val or test.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write metrics, CSVs and plots here.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help=r"TOML job file with an \[evaluate] table.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Evaluate BUNDLE on DATA: accuracy, loss, per-class precision/recall/F1, confusion matrix."""
    from classify_job.cli.console import evaluation_table, stdout
    from classify_job.train.evaluate import EvaluateJob
    from classify_job.train.evaluate import evaluate as run_evaluation

    def evaluated():
        job = EvaluateJob.resolve(config, bundle=bundle, data=data, split=split, out=out)
        return job, run_evaluation(job.bundle, job.data, job.out, job.split)

    job, report = invoke(evaluated, verbose)
    stdout.print(evaluation_table(report))
    for c in report.top_confusions[:5]:
        stdout.print(f"  {c.true} -> {c.predicted}: {c.count} ({c.rate:.1%})", markup=False)
    if job.out is not None:
        stdout.print(f"Report files: {job.out}", markup=False, soft_wrap=True)


@app.command("check-data", cls=Command)
def check_data(
    data: Annotated[Path, typer.Argument(help="Folder dataset to inspect.")],
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when any problem is found.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write the sheets, balance plot and CSV here.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the images samples.png shows.")] = 0,
    verbose: Verbose = False,
) -> None:
    """Find corrupt, duplicate and mislabeled-looking files; report class balance, sizes and modes.

    With --out DIR, also draw them: a contact sheet per class, the class balance, the flagged files.
    """
    from classify_job.cli.console import data_report_facts, data_report_table, stdout
    from classify_job.train.checkdata import check_data as inspect_dataset

    if out is not None:  # before reading every file: a folder that cannot be made fails at once
        from classify_job.train.dataplots import prepare_output_dir

        invoke(lambda: prepare_output_dir(out, data), verbose)
    report = invoke(lambda: inspect_dataset(data), verbose)
    stdout.print(data_report_table(report))
    for line in data_report_facts(report):
        stdout.print(line, markup=False, soft_wrap=True)
    for problem in report.problems:
        stdout.print(f"problem: {problem}", markup=False)
    for bad in report.corrupt[:20]:
        stdout.print(f"  unreadable: {bad.relpath}: {bad.reason}", markup=False)
    for mismatch in report.format_mismatches[:20]:
        stdout.print(f"  {mismatch.relpath} is {mismatch.actual_format}", markup=False)
    if out is not None:
        _write_data_files(report, out, seed, verbose)
    if strict and report.problems:
        raise typer.Exit(2)


def _write_data_files(report, out: Path, seed: int, verbose: bool) -> None:
    from classify_job.cli.console import stdout
    from classify_job.train.dataplots import write_data_files

    written = invoke(lambda: write_data_files(report, out, seed), verbose)
    stdout.print(
        f"Data files in {out}: {written.samples.name}, {written.class_balance.name}, "
        f"{written.near_duplicates.name} ({written.duplicate_pairs} pairs), "
        f"{written.suspects.name} ({written.suspect_rows} rows)",
        markup=False, soft_wrap=True,
    )  # fmt: skip


@app.command(cls=Command)
def export(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    data: Annotated[
        Path | None, typer.Option(help=r"Images to verify on. \[default: the bundle's own test split]")
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also quantise the ONNX graph to int8 (model.int8.onnx), kept only if it passes its gate "
            "against the float graph on the test split (or --data, then class folders).",
        ),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Add exported inference graphs (ONNX, OpenVINO) to BUNDLE, verified against its Keras model.

    Exits 3, keeping no export, when an exported graph's probabilities differ by more than 1e-4;
    with --int8, exits 3 keeping no int8 graph (the float graphs stay) when the gate refuses it.
    """
    from classify_job.cli.console import stdout
    from classify_job.train.export import export_bundle
    from classify_job.train.int8_export import export_int8

    def export_all():
        exported = export_bundle(bundle, data).spec.exports
        return (*exported, export_int8(bundle, data)) if int8 else exported

    for entry in invoke(export_all, verbose):
        check = entry["verified"]
        stdout.print(
            f"{entry['format']}: {bundle / entry['file']} verified on {check['images']} images "
            f"({check['source']}): max probability difference {check['max_abs_prob_diff']:.2g}",
            markup=False,
            soft_wrap=True,
        )


@app.command(cls=Command)
def calibrate(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    data: Annotated[Path, typer.Argument(help="Labelled folder dataset (class subfolders).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the recalibrated bundle.")],
    target_precision: Annotated[
        float, typer.Option(help="Precision auto-accepted labels must reach, per class.")
    ] = TARGET,
    precision_scope: Annotated[str, PRECISION_SCOPE] = "class",
    verbose: Verbose = False,
) -> None:
    """Refit calibration, per-class accept thresholds and the unfamiliar cut-off of BUNDLE on DATA.

    Writes a copy to --out with the same weights (same model_id); classify with it re-decides
    earlier rows from their stored raw probabilities, without running the model.
    """
    from classify_job.cli.console import decision_table, stdout
    from classify_job.decisions.fitting import RuleChoice
    from classify_job.train.recalibrate import recalibrate_bundle

    def recalibrated():
        return recalibrate_bundle(bundle, data, out, RuleChoice(target_precision, precision_scope))

    spec = invoke(recalibrated, verbose)
    stdout.print(decision_table(spec))
    stdout.print(
        f"Recalibrated bundle: {out} ({spec.calibration['calibration_id']})", markup=False, soft_wrap=True
    )


@app.command(
    cls=settings_command("classify_job.train.config:TuneConfig", TRAIN_CONFIG, image_size=tune_image_size)
)
def tune(
    data: Annotated[Path | None, typer.Argument(help="Folder dataset: one subfolder per class.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Bundle directory for the best model.")
    ] = None,
    trials: Annotated[int | None, typer.Option(help="Most trials to run.")] = None,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Time for the search, feature extraction included.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help=r"TOML job file with \[train] and \[tune] tables.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs of each trial's head.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for splits, search and training.")] = None,
    val_split: Annotated[float | None, typer.Option(help="Fraction held out to score trials.")] = None,
    test_split: Annotated[float | None, typer.Option(help="Fraction held out for the final test.")] = None,
    target_precision: Annotated[
        float | None, typer.Option(help="Precision auto-accepted labels must reach.")
    ] = None,
    overwrite: Annotated[
        bool | None, typer.Option("--overwrite", help="Replace an existing bundle in --out.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Search the fine-tuning settings with keras-tuner within a time budget, then train the best.

    Head trials (learning rate, dropout, width, augmented views) reuse cached backbone features;
    trials that change the features (augmentation strength, fine-tuned blocks) cost more and are
    charged in full. Writes the bundle, trials.csv and trials.png to --out.
    """
    from classify_job.train.config import TrainConfig, TuneConfig

    def resolved() -> TuneConfig:
        base = TrainConfig.resolve(
            config, data_dir=data, out_dir=out, arch="efficientnet_lite0", epochs=epochs,
            image_size=image_size, seed=seed, val_split=val_split, test_split=test_split,
            target_precision=target_precision, overwrite=overwrite,
        )  # fmt: skip
        return TuneConfig.resolve(config, base, trials=trials, budget_minutes=budget_minutes)

    invoke(lambda: _tune(resolved()), verbose)


def _tune(config) -> None:
    from classify_job.cli.console import evaluation_table, stdout, trials_table
    from classify_job.train.tune import tune

    result = tune(config)
    stdout.print(trials_table(result.trials))
    stdout.print(evaluation_table(result.train.report))
    stdout.print(
        f"Best trial {result.best['trial']} (val_loss {result.best['val_loss']:.4f}); search "
        f"{result.search_s:.0f} s of a {config.budget_minutes:g}-minute budget, final training "
        f"{result.final_s:.0f} s.\nBundle: {result.train.bundle_dir} ({result.train.spec.model_id}), "
        f"with trials.csv and trials.png",
        markup=False, soft_wrap=True,
    )  # fmt: skip
