"""Fit a network on decoded splits: AdamW, a plateau or cosine schedule, early stopping with the
best weights restored, and one history row per epoch for the caller's progress display."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from classify_job.decisions.calibration import HeldOut
from classify_job.train.augment import build_augmentation
from classify_job.train.config import TrainConfig
from classify_job.train.dataset import TrainingData


@dataclass(frozen=True)
class EpochInfo:
    """What the per-epoch hook receives: 1-based epoch, its wall time, and Keras' logs plus the rate."""

    epoch: int
    epochs: int
    seconds: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class Fitted:
    """What an architecture's recipe returns: one history row per epoch, facts for bundle.json,
    and, when the recipe has them cheaply, predictions the model never trained on (``held_out``)
    and training-image features (``reference``) for calibration."""

    history: list[dict[str, float]]
    facts: dict[str, Any]
    held_out: HeldOut | None = None
    reference: HeldOut | None = None


def monitor_metric(data: TrainingData) -> str:
    """What early stopping, rate reduction and best-epoch choice watch: validation loss when
    there is a validation split, else training loss."""
    return "val_loss" if len(data.val) else "loss"


def best_epoch(history: Sequence[dict[str, float]], monitor: str) -> int:
    """1-based epoch with the lowest ``monitor`` (the one EarlyStopping restored)."""
    values = [row.get(monitor, math.inf) for row in history]
    return int(history[int(np.argmin(values))]["epoch"]) if history else 0


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
    monitor = monitor_metric(data)
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
