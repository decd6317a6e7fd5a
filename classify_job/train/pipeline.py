"""Train a classifier on a folder dataset and write a model bundle with its reports.

``train(TrainConfig(...))`` indexes and decodes the data once into uint8 arrays, fits the network
with its architecture's recipe, evaluates the kept weights on the test split and writes the bundle
into a staging folder (:mod:`classify_job.train.staging`): the model and reports
(:mod:`classify_job.train.artifacts`), the decision rule's files, the exported graphs (verified on
the test images already decoded, with the model in memory: nothing is read back), the model card,
and last ``bundle.json``, written once from the spec each stage has added to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.bundle import SPEC_FILE, BundleSpec, write_spec
from classify_job.decisions.attributes import attributes_for
from classify_job.decisions.calibration import HeldOut
from classify_job.decisions.fitting import KeptScore, RuleChoice, calibration_data, fit_rule
from classify_job.decisions.rule import DecisionRule
from classify_job.errors import DatasetError, ExportError, InputError, OutputError
from classify_job.runtime import set_seeds
from classify_job.train.architectures import architecture, build_net, configure, parse_options
from classify_job.train.artifacts import write_model_card, write_outputs
from classify_job.train.config import TrainConfig
from classify_job.train.dataset import BadFile, TrainingData, class_weights, index_dataset, load_split
from classify_job.train.evaluate import predict_with_features
from classify_job.train.export import decoded_images, export_graphs, with_exports
from classify_job.train.fit import EpochInfo, best_epoch, monitor_metric
from classify_job.train.int8_rule import Int8Refit
from classify_job.train.metrics import EvaluationReport, report_from_probs
from classify_job.train.staging import staged_bundle
from classify_job.train.state import Trained, TrainRun

log = logging.getLogger(__name__)

IMBALANCE_RATIO = 1.5  # "auto" weights classes once the largest is this many times the smallest


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`: where the bundle is, its spec, history and the test evaluation."""

    bundle_dir: Path
    spec: BundleSpec
    report: EvaluationReport
    history: tuple[dict[str, float], ...]
    split_sizes: dict[str, int]
    bad_files: tuple[BadFile, ...]
    best_epoch: int
    wall_time_s: float
    export_warning: str | None = None

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([row["seconds"] for row in self.history])) if self.history else 0.0


def train(
    config: TrainConfig,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    callbacks: Sequence[Any] = (),
    data: TrainingData | None = None,
    before_commit: Callable[[Path, BundleSpec], BundleSpec] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``config.data_dir`` and write the bundle into ``config.out_dir``.

    ``on_epoch`` is called after every epoch (for progress displays); ``callbacks`` are extra Keras
    callbacks (for per-batch progress); ``data`` is the folder already decoded by
    :func:`prepare_data` with this config (tuning decodes it once for every trial);
    ``before_commit(staging, spec)`` adds files to the staged bundle before it is moved into place
    (:mod:`classify_job.train.staging`) and returns the spec to write, with what it adds.
    """
    started = time.perf_counter()
    run = start_run(config, data, on_epoch, callbacks)
    trained = fit_and_evaluate(run)
    with staged_bundle(run.config.out_dir) as staging:
        spec = write_outputs(staging, trained, time.perf_counter() - started)
        spec, rule, refit = _with_decision_rule(staging, trained, spec)
        spec, export_warning = _with_exports(staging, trained, spec)
        spec = _with_int8(staging, trained, spec, rule, refit)
        write_model_card(spec, trained.report, staging / "README.md")
        if before_commit is not None:
            spec = before_commit(staging, spec)
        write_spec(staging, spec)  # the one bundle.json, the last file staged
    history = trained.fitted.history
    return TrainResult(
        bundle_dir=run.config.out_dir,
        spec=spec,
        report=trained.report,
        history=tuple(history),
        split_sizes=run.data.split_sizes(),
        bad_files=run.data.bad_files,
        best_epoch=best_epoch(history, monitor_metric(run.data)),
        wall_time_s=time.perf_counter() - started,
        export_warning=export_warning,
    )


def start_run(
    config: TrainConfig,
    data: TrainingData | None = None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainRun:
    """Check ``config`` (its architecture's options parsed, once) and the output folder, seed,
    decode the data unless given, and choose the class weights."""
    config = configure(config)
    options = parse_options(config)
    check_out_dir(config)
    set_seeds(config.seed)
    data = prepare_data(config) if data is None else data
    attributes_for(config.attributes or {}, tuple(data.index.classes))  # a bad --attributes fails now
    weights = choose_class_weights(data.train.labels, len(data.index.classes), config.class_weighting)
    return TrainRun(config, data, options, weights, on_epoch, callbacks)


def fit_and_evaluate(run: TrainRun) -> Trained:
    """Build the network, fit it with its architecture's recipe, evaluate the kept weights."""
    net = build_net(run)
    fitted = architecture(run.config.arch).fit(net, run)
    test, report = _evaluate_best(net, run.data)
    return Trained(run, net, fitted, test, report)


def _with_exports(staging: Path, trained: Trained, spec: BundleSpec) -> tuple[BundleSpec, str | None]:
    """The exported inference graphs, verified on the test images decoded for training against the
    model in memory: model.keras was saved from it a moment ago, and reading the file back would
    test Keras' saving, not the export. A failed export leaves the Keras bundle, and a warning."""
    try:
        check = decoded_images(trained.run.data, str(spec.training_dir))
        return with_exports(spec, export_graphs(trained.net, staging, check)), None
    except (ExportError, InputError) as exc:
        log.warning("the bundle has no exported graph (classify will use Keras): %s", exc)
        return spec, str(exc)


def _with_int8(
    staging: Path, trained: Trained, spec: BundleSpec, rule: DecisionRule | None, refit: Int8Refit | None
) -> BundleSpec:
    """The int8 graph (``config.int8``), calibrated on training images and gated on the test split
    decoded for training: the float graph's accepted labels decided by the bundle's whole ``rule``
    (unfamiliar cut-off included; nothing is read back), the int8 graph's by its own, which
    ``refit`` fits on the same held-out images. One the gate refuses leaves the float graphs, and
    a warning."""
    from classify_job.train.int8_export import int8_entry, with_int8
    from classify_job.train.int8_gate import CALIBRATION_IMAGES, Labelled

    data = trained.run.data
    if not trained.run.config.int8 or not any(e["format"] == "onnx" for e in spec.exports):
        return spec
    if not len(data.test):
        log.warning("no int8 graph: there is no test split to judge it on (export --int8 --data DIR)")
        return spec
    calibration = data.train.images[:: max(1, len(data.train) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES]
    test = Labelled(data.test.images, np.asarray(data.test.labels, np.int64), "the test split")
    try:
        return with_int8(spec, int8_entry(staging, spec, test, calibration, rule, refit))
    except ExportError as exc:
        log.warning("the bundle has no int8 graph (classify will use the float graph): %s", exc)
        return spec


def check_out_dir(config: TrainConfig) -> None:
    if (config.out_dir / SPEC_FILE).exists() and not config.overwrite:
        raise OutputError(f"{config.out_dir} already holds a model bundle; choose another --out or overwrite")
    try:
        config.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {config.out_dir}: {exc}") from exc


def prepare_data(config: TrainConfig) -> TrainingData:
    """Index the folder, then decode every split once into uint8 arrays."""
    started = time.perf_counter()
    index = index_dataset(config.data_dir, config.val_split, config.test_split, config.extensions)
    load = {
        name: load_split(config.data_dir, samples, config.image_size, config.color_mode, config.workers)
        for name, samples in index.splits.items()
    }
    if len(load["train"]) == 0:
        raise DatasetError(f"no readable training images under {config.data_dir}")
    bad = sum(len(split.bad_files) for split in load.values())
    log.info(
        "decoded %s images in %.1f s (%d unreadable)", index.split_sizes(), time.perf_counter() - started, bad
    )
    return TrainingData(index, load["train"], load["val"], load["test"])


def choose_class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced class weights for ``balanced``, or for ``auto`` when classes are imbalanced; else None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes)
    if mode == "auto" and counts.max() <= IMBALANCE_RATIO * max(counts.min(), 1):
        return None
    return class_weights(labels, num_classes)


def _evaluate_best(net: Any, data: TrainingData) -> tuple[HeldOut, EvaluationReport]:
    """The kept model on the test split (validation, else training, when there is none)."""
    split, name = (data.test, "test") if len(data.test) else (data.val, "val")
    if len(split) == 0:
        split, name = data.train, "train"
        log.warning("no test or validation images: the reported metrics are on the training split")
    probs, features = predict_with_features(net, split.images)
    report = report_from_probs(data.index.classes, split.labels, probs, split.relpaths, name, split.bad_files)
    return HeldOut(probs, split.labels, features, f"the {name} split"), report


def _with_decision_rule(
    staging: Path, trained: Trained, spec: BundleSpec
) -> tuple[BundleSpec, DecisionRule | None, Int8Refit | None]:
    """Calibration, accept thresholds and the unfamiliar cut-off fitted on ``trained``'s held-out
    predictions and measured on its test split, their files written into ``staging``: the spec
    with them, the rule, and what refits it for an int8 graph (None without the held-out images).
    The old rule (None) without a validation split to fit on."""
    found = calibration_data(trained.net, trained.run.data, trained.fitted)
    if found is None:
        log.warning("no validation split to calibrate on: the bundle keeps the fixed review rule")
        return spec, None, None
    honest_test = trained.test if trained.test.source == "the test split" else None
    config = trained.run.config
    attributes = attributes_for(config.attributes or {}, spec.labels)
    choice = RuleChoice(config.target_precision, config.precision_scope)
    fitted = fit_rule(spec, found, honest_test, choice, attributes)
    fitted.write_files(staging)
    spec = fitted.recorded_in(spec)
    kept = KeptScore(fitted.rule.score, fitted.unfamiliar["sha256"])
    refit = Int8Refit(spec, found, kept, choice, attributes) if Int8Refit.possible(found) else None
    return spec, fitted.rule, refit
