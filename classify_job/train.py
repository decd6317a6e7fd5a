"""Train a classifier on a folder dataset and write a model bundle with its reports.

``train(TrainConfig(...))`` indexes and decodes the data once into uint8 arrays, fits the network
with augmentation inside the jitted training graph, keeps the best epoch by validation loss,
evaluates it on the test split and writes the bundle with :mod:`classify_job.modelcard`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classify_job.bundle import SPEC_FILE, BundleSpec
from classify_job.config import read_toml
from classify_job.dataset import (
    IMAGE_EXTENSIONS,
    AugmentConfig,
    BadFile,
    DatasetIndex,
    LoadedSplit,
    build_augmentation,
    class_weights,
    index_dataset,
    load_split,
)
from classify_job.errors import DatasetError, InputError, OutputError
from classify_job.evaluate import EvaluationReport
from classify_job.imageio import COLOR_MODES, channels_for
from classify_job.modelcard import best_epoch, write_outputs
from classify_job.runtime import set_seeds

log = logging.getLogger(__name__)

# Architecture name -> "module:builder". A builder takes (num_classes, image_size, channels, **options)
# and returns a Keras model mapping float32 pixels 0..255 to probabilities. Add a network in one line.
ARCHITECTURES: dict[str, str] = {
    "cnn": "classify_job.nets.cnn:build_cnn",
    "efficientnet_lite0": "classify_job.finetune:build_pretrained_classifier",
}
# Architectures with their own training recipe: "module:function" taking fit()'s arguments and
# returning (history rows, facts for bundle.json's extra). The others go through fit().
FITTERS: dict[str, str] = {"efficientnet_lite0": "classify_job.finetune:fit_pretrained"}
DEFAULT_IMAGE_SIZES: dict[str, tuple[int, int]] = {"efficientnet_lite0": (224, 224)}
DEFAULT_IMAGE_SIZE = (64, 64)
ARCH_COLOR_MODES: dict[str, tuple[str, ...]] = {"efficientnet_lite0": ("rgb",)}  # default: all
LR_SCHEDULES = ("plateau", "cosine")
CLASS_WEIGHTING = ("auto", "balanced", "none")
IMBALANCE_RATIO = 1.5  # "auto" weights classes once the largest is this many times the smallest


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; recorded in the bundle as ``extra["training"]``."""

    data_dir: Path
    out_dir: Path
    arch: str = "cnn"
    epochs: int = 30
    batch_size: int = 128
    image_size: tuple[int, int] | None = None  # None: the architecture's default
    color_mode: str = "rgb"
    seed: int = 0
    val_split: float = 0.1
    test_split: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "plateau"
    warmup_epochs: int = 0
    patience: int = 6
    lr_patience: int = 2
    class_weighting: str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    arch_options: dict[str, Any] = field(default_factory=dict)
    extensions: tuple[str, ...] = tuple(sorted(IMAGE_EXTENSIONS))
    workers: int = 4
    overwrite: bool = False

    def __post_init__(self) -> None:
        size = self.image_size
        if size is None:
            size = DEFAULT_IMAGE_SIZES.get(self.arch, DEFAULT_IMAGE_SIZE)
        size = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "extensions", tuple(e.lower() for e in self.extensions))
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", _augment_from_dict(self.augment))
        self._validate()

    def _validate(self) -> None:
        modes = ARCH_COLOR_MODES.get(self.arch, COLOR_MODES)
        checks = {
            "arch": (self.arch in ARCHITECTURES, f"one of {sorted(ARCHITECTURES)}"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "image_size": (
                len(self.image_size) == 2 and min(self.image_size) >= 8,
                "(height, width), each >= 8",
            ),
            "color_mode": (self.color_mode in modes, f"one of {sorted(modes)} for arch={self.arch!r}"),
            "learning_rate": (self.learning_rate > 0, "> 0"),
            "lr_schedule": (self.lr_schedule in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
            "warmup_epochs": (0 <= self.warmup_epochs < self.epochs, "in [0, epochs)"),
            "class_weighting": (self.class_weighting in CLASS_WEIGHTING, f"one of {CLASS_WEIGHTING}"),
            "val_split": (0 <= self.val_split < 1 - self.test_split, "in [0, 1 - test_split)"),
            "test_split": (0 <= self.test_split < 1, "in [0, 1)"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise InputError(f"{name} must be {expected}. Received: {name}={getattr(self, name)!r}")

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """Read the ``[train]`` table of a job file (``[train.augment]`` for augmentation).

        Relative paths are taken relative to the current directory, as on the CLI. ``overrides``
        that are not None replace file values, so CLI flags win over the job file.
        """
        table = read_toml(Path(path), "train")
        unknown = sorted(set(table) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"job file {path}: unknown keys in [train]: {unknown}")
        values = {**table, **{k: v for k, v in overrides.items() if v is not None}}
        missing = sorted({"data_dir", "out_dir"} - set(values))
        if missing:
            raise InputError(f"job file {path}: [train] must set {missing}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise InputError(f"job file {path}: bad [train] settings: {exc}") from exc

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with every override that is not None applied (for CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as recorded in ``bundle.json``."""
        data = dataclasses.asdict(self)
        data.update(data_dir=str(self.data_dir), out_dir=str(self.out_dir), image_size=list(self.image_size))
        data["extensions"] = list(self.extensions)
        return data


def _augment_from_dict(data: dict[str, Any]) -> AugmentConfig:
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(AugmentConfig)})
    if unknown:
        raise InputError(f"unknown augment keys: {unknown}")
    return AugmentConfig(**data)


@dataclass(frozen=True)
class EpochInfo:
    """What the per-epoch hook receives: 1-based epoch, its wall time, and Keras' logs plus the rate."""

    epoch: int
    epochs: int
    seconds: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrainingData:
    """Decoded splits plus what the bundle records about them."""

    index: DatasetIndex
    train: LoadedSplit
    val: LoadedSplit
    test: LoadedSplit

    @property
    def bad_files(self) -> tuple[BadFile, ...]:
        return self.train.bad_files + self.val.bad_files + self.test.bad_files

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


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

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([row["seconds"] for row in self.history])) if self.history else 0.0


def train(
    config: TrainConfig,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train ``config.arch`` on ``config.data_dir`` and write the bundle into ``config.out_dir``.

    ``on_epoch`` is called after every epoch (for progress displays); ``callbacks`` are extra Keras
    callbacks (for per-batch progress).
    """
    started = time.perf_counter()
    _check_out_dir(config)
    set_seeds(config.seed)
    data = prepare_data(config)
    weights = choose_class_weights(data.train.labels, len(data.index.classes), config.class_weighting)
    net = build_model(
        config.arch, len(data.index.classes), config.image_size, config.color_mode, config.arch_options
    )
    history, facts = fit_function(config.arch)(net, data, config, weights, on_epoch, callbacks)
    report = _evaluate_best(net, data)
    spec = write_outputs(net, config, data, weights, history, report, time.perf_counter() - started, facts)
    monitor = "val_loss" if len(data.val) else "loss"
    return TrainResult(
        bundle_dir=config.out_dir,
        spec=spec,
        report=report,
        history=tuple(history),
        split_sizes=data.split_sizes(),
        bad_files=data.bad_files,
        best_epoch=best_epoch(history, monitor),
        wall_time_s=time.perf_counter() - started,
    )


def _check_out_dir(config: TrainConfig) -> None:
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


def build_model(
    arch: str, num_classes: int, image_size: tuple[int, int], color_mode: str, options: dict
) -> Any:
    """Look ``arch`` up in :data:`ARCHITECTURES` and build it."""
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture. Expected one of {sorted(ARCHITECTURES)}. Received: {arch!r}")
    return _resolve(ARCHITECTURES[arch])(num_classes, image_size, channels_for(color_mode), **options)


def fit_function(arch: str) -> Callable[..., tuple[list[dict[str, float]], dict[str, Any]]]:
    """The recipe in :data:`FITTERS` for ``arch``, else :func:`fit` (which adds no bundle facts)."""
    if arch in FITTERS:
        return _resolve(FITTERS[arch])
    return lambda *args: (fit(*args), {})


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def fit(
    net: Any,
    data: TrainingData,
    config: TrainConfig,
    weights: dict[int, float] | None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> list[dict[str, float]]:
    """Fit ``net`` (augmentation wrapped around it for training only); returns one row per epoch."""
    model = _training_model(net, build_augmentation(config.augment, config.seed))
    steps = math.ceil(len(data.train) / config.batch_size)
    model.compile(
        optimizer=make_optimizer(config, steps), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    monitor = "val_loss" if len(data.val) else "loss"
    recorder = EpochRecorder(config.epochs, on_epoch)
    model.fit(
        data.train.images,
        data.train.labels,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(data.val.images, data.val.labels) if len(data.val) else None,
        class_weight=weights,
        shuffle=True,
        callbacks=[recorder, *_standard_callbacks(config, monitor), *callbacks],
        verbose=0,
    )
    return recorder.rows


def _training_model(net: Any, augmentation: Any) -> Any:
    if augmentation is None:
        return net
    inputs = keras.Input(net.input_shape[1:], name="pixels")
    return keras.Model(inputs, net(augmentation(inputs)), name=f"{net.name}_training")


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> Any:
    """AdamW; with ``cosine`` the rate warms up linearly, then decays to zero by the last step."""
    rate: Any = config.learning_rate
    if config.lr_schedule == "cosine":
        warmup = config.warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else config.learning_rate,
            decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
            warmup_target=config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=config.weight_decay)
    # Decaying BatchNorm scales and biases only fights the normalisation.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def _standard_callbacks(config: TrainConfig, monitor: str) -> list[Any]:
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, restore_best_weights=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, factor=0.3, patience=config.lr_patience, min_lr=config.learning_rate * 1e-3
            )
        )
    return callbacks


class EpochRecorder(keras.callbacks.Callback):
    """Keeps one row per epoch (metrics, learning rate, seconds) and calls the user's hook."""

    def __init__(self, epochs: int, on_epoch: Callable[[EpochInfo], None] | None) -> None:
        super().__init__()
        self.epochs, self.on_epoch, self.rows = epochs, on_epoch, []
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        seconds = time.perf_counter() - self._started
        self.rows.append({"epoch": epoch + 1, "seconds": round(seconds, 3), **metrics})
        if self.on_epoch is not None:
            self.on_epoch(EpochInfo(epoch + 1, self.epochs, seconds, metrics))


def _evaluate_best(net: Any, data: TrainingData) -> EvaluationReport:
    from classify_job.evaluate import evaluate_arrays

    split, name = (data.test, "test") if len(data.test) else (data.val, "val")
    if len(split) == 0:
        split, name = data.train, "train"
        log.warning("no test or validation images: the reported metrics are on the training split")
    return evaluate_arrays(net, data.index.classes, split, name)
