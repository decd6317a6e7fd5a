"""Fit a network on decoded splits: AdamW, a plateau or cosine schedule, early stopping with the
best weights restored, optionally epochs sized to a time budget, and one history row per epoch for
the caller's progress display."""

from __future__ import annotations

import math
import statistics
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
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, float]]:
    """Fit ``net`` (augmentation wrapped around it for training only); returns one row per epoch."""
    return fit_with_facts(net, data, config, weights, on_epoch, callbacks, clock).history


def fit_with_facts(
    net: Any,
    data: TrainingData,
    config: TrainConfig,
    weights: dict[int, float] | None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    callbacks: Sequence[Any] = (),
    clock: Callable[[], float] = time.monotonic,
) -> Fitted:
    """:func:`fit`, with ``{"budget": ...}`` in the facts when ``config.budget_minutes`` is set
    (``clock`` is what the budget is measured with)."""
    steps = math.ceil(len(data.train) / config.batch_size)
    model = compiled_training_model(net, config, steps)
    monitor = monitor_metric(data)
    recorder = EpochRecorder(config.epochs, on_epoch)
    budget = TimeBudget(config, clock) if config.budget_minutes is not None else None
    standard = _standard_callbacks(config, monitor)
    model.fit(
        data.train.images,
        data.train.labels,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(data.val.images, data.val.labels) if len(data.val) else None,
        class_weight=weights,
        shuffle=True,
        callbacks=[recorder, *([budget] if budget else []), *standard, *callbacks],
        verbose=0,
    )
    if budget is None:
        return Fitted(recorder.rows, {})
    return Fitted(recorder.rows, {"budget": budget.facts(len(recorder.rows), standard[0].stopped_epoch > 0)})


def compiled_training_model(net: Any, config: TrainConfig, steps_per_epoch: int) -> Any:
    """``net`` with the training augmentation around it, compiled with the run's optimizer and loss."""
    model = _training_model(net, build_augmentation(config.augment, config.seed))
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _training_model(net: Any, augmentation: Any) -> Any:
    if augmentation is None:
        return net
    inputs = keras.Input(net.input_shape[1:], name="pixels")
    return keras.Model(inputs, net(augmentation(inputs)), name=f"{net.name}_training")


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> Any:
    """AdamW; with ``cosine`` the rate warms up linearly, then decays to zero by the last step.

    Under a time budget the number of epochs is known only once the first have been timed, so the
    rate is a plain variable that :class:`TimeBudget` sets epoch by epoch (:func:`cosine_rate`).
    """
    rate: Any = config.learning_rate
    if config.lr_schedule == "cosine" and config.budget_minutes is None:
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


def cosine_rate(config: TrainConfig, epoch: int, epochs: int) -> float:
    """The cosine schedule's rate for 0-based ``epoch`` of ``epochs``, taken at the epoch's middle:
    a linear warm-up over ``warmup_epochs``, then a half cosine down to zero at the last epoch's end."""
    warmup = min(config.warmup_epochs, epochs - 1)
    if epoch < warmup:
        return config.learning_rate * (epoch + 0.5) / warmup
    progress = (epoch - warmup + 0.5) / max(1, epochs - warmup)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class TimeBudget(keras.callbacks.Callback):
    """Sizes the epochs to ``config.budget_minutes`` of fitting and stops on time.

    The plan is the epochs that fit what is left at the typical epoch's pace, capped by
    ``config.epochs``, and the cosine schedule, when chosen, is sized to it. It is made after each
    of the first ``PLANNING_EPOCHS`` and re-made while under ``REPLAN_SHARE`` of the planned
    epochs are done, where changing the schedule's length barely moves its rate. The typical epoch
    is the median of those timed after the first, which includes compilation (a plan made on the
    first alone is a cautious one, and ran a 27-minute budget to 24.3 minutes). Fitting also stops
    before an epoch the time left would not hold, and within an epoch once the budget is spent.
    Stopping ends ``fit``, whose EarlyStopping then restores the best epoch's weights.
    """

    PLANNING_EPOCHS = 2
    REPLAN_SHARE = 1 / 3

    def __init__(self, config: TrainConfig, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.config, self.clock = config, clock
        self.budget_s = float(config.budget_minutes) * 60
        self.planned, self.stop_reason, self.timed = config.epochs, None, 0
        self.started = self.last_end = 0.0
        self.epoch_s: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = self.last_end = self.clock()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.config.lr_schedule == "cosine":
            self.model.optimizer.learning_rate = cosine_rate(self.config, epoch, self.planned)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.clock() - self.started >= self.budget_s:
            self.stop_reason, self.model.stop_training = "budget spent within an epoch", True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = self.clock()
        self.epoch_s.append(now - self.last_end)
        self.last_end = now
        left, done = self.budget_s - (now - self.started), epoch + 1
        if done <= max(self.PLANNING_EPOCHS, self.planned * self.REPLAN_SHARE):
            typical = statistics.median(self.epoch_s[1:] or self.epoch_s)
            self.planned = max(done, min(self.config.epochs, done + int(left // typical)))
            self.timed = done
        if done >= self.config.epochs or self.stop_reason is not None:
            return
        if left < self.epoch_s[-1]:
            self.stop_reason, self.model.stop_training = "budget: the next epoch would not fit", True
        elif done >= self.planned:
            self.stop_reason, self.model.stop_training = "budget: the planned epochs are run", True

    def facts(self, epochs_run: int, early_stopped: bool) -> dict[str, Any]:
        """What bundle.json records: the budget, the epochs planned and run, and why fitting stopped."""
        reason = self.stop_reason or ("early stopping" if early_stopped else None)
        if reason is None:
            reason = "all epochs run" if epochs_run >= self.config.epochs else "training stopped (NaN loss)"
        return {
            "budget_minutes": self.config.budget_minutes,
            "max_epochs": self.config.epochs,
            "epochs_planned": self.planned,
            "epochs_run": epochs_run,
            "stopped_because": reason,
            "fit_s": round(self.last_end - self.started, 1),
            "timed_epochs_s": [round(s, 2) for s in self.epoch_s[: self.timed]],
        }
