"""``classify-job tune``: keras-tuner searches the fine-tuning recipe's settings within a time budget.

Cheap trials change only the head (learning rate, dropout, width, how many cached augmented views
it sees): they train on backbone features computed once. Expensive trials change the features: a
new augmentation strength needs its augmented views computed again, and fine-tuned blocks train
on pixels. Every second counts against the budget, feature extraction included, and a trial whose
estimated cost exceeds what is left is not started (it is listed as ``over budget``). The best
settings then train the bundle through :func:`classify_job.train.pipeline.train`, timed apart.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.bundle import BundleSpec
from classify_job.errors import DatasetError
from classify_job.nets import pretrained
from classify_job.runtime import set_seeds
from classify_job.train.architectures import build_net, parse_options
from classify_job.train.augment import build_augmentation
from classify_job.train.config import AugmentConfig, TrainConfig, TuneConfig
from classify_job.train.dataset import LoadedSplit, TrainingData
from classify_job.train.finetune import CachedFeatures, extract_features, feature_function, fit_on_features
from classify_job.train.pipeline import TrainResult, start_run, train
from classify_job.train.plots import plot_trials
from classify_job.train.state import TrainRun

log = logging.getLogger(__name__)

HEAD_SETTINGS = ("learning_rate", "dropout", "head_width", "augmented_views")
FEATURE_SETTINGS = ("fine_tune_blocks", "augment_strength")
PHASE_TWO_PASSES = 3  # a training step costs about three forward passes (forward, backward, update)


def search_space(hp: Any) -> dict[str, Any]:
    """The settings a trial draws (keras-tuner hyperparameters)."""
    return {
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1),
        "head_width": hp.Choice("head_width", [0, 128, 256]),
        "augmented_views": hp.Choice("augmented_views", [0, 1, 2]),
        "fine_tune_blocks": hp.Choice("fine_tune_blocks", [0, 1, 2]),
        "augment_strength": hp.Choice("augment_strength", [0.5, 1.0, 1.5]),
    }


def trial_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with a trial's settings: rates, head and augmentation (scaled by its strength)."""
    options = {
        **base.arch_options,
        "dropout": values["dropout"],
        "head_width": int(values["head_width"]),
        "augmented_views": int(values["augmented_views"]),
        "fine_tune_blocks": int(values["fine_tune_blocks"]),
    }
    return dataclasses.replace(
        base,
        learning_rate=values["learning_rate"],
        augment=scaled(base.augment, values["augment_strength"]),
        arch_options=options,
    )


def scaled(augment: AugmentConfig, strength: float) -> AugmentConfig:
    """Every random transform ``strength`` times as strong (flips unchanged), below 1 each."""
    fields = ("rotation", "zoom", "translate", "contrast", "brightness")
    return dataclasses.replace(augment, **{f: min(getattr(augment, f) * strength, 0.95) for f in fields})


class TrialRunner:
    """Runs trials on one decoded dataset (the base ``run``), keeping each augmentation strength's
    cached views, and keeps the record of every trial: settings, kind, status, validation
    figures, seconds."""

    def __init__(self, run: TrainRun, budget_s: float, started: float):
        self.run, self.base, self.data = run, run.config, run.data
        self.budget_s, self.started = budget_s, started
        self.records: list[dict[str, Any]] = []
        self.backbone = pretrained.pretrained_backbone(self.base.image_size, fast=True)
        batch = run.options.feature_batch_size
        self.extract = lambda fn, images: extract_features(fn, images, batch)
        data = self.data
        t0 = time.perf_counter()
        clean = feature_function(self.backbone)
        self.clean = (self.extract(clean, data.train.images), self.extract(clean, data.val.images))
        self.seconds_per_image = (time.perf_counter() - t0) / max(len(data.train) + len(data.val), 1)
        self.views: dict[float, list[np.ndarray]] = {}
        self.phase_two_s: dict[int, float] = {}

    def remaining(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def __call__(self, trial_id: str, values: dict[str, Any]) -> float:
        """The trial's best validation loss; raises OverBudget when it would not fit in the budget."""
        kind = trial_kind(values, self.views)
        estimate = self.estimate(values)
        record = {"trial": trial_id, "kind": kind, **values, "estimated_s": round(estimate, 1)}
        if estimate > self.remaining():
            self.records.append({**record, "status": "over budget", "started_at_s": self._elapsed()})
            raise OverBudget(f"trial {trial_id} needs ~{estimate:.0f} s, {self.remaining():.0f} s left")
        start, elapsed = time.perf_counter(), self._elapsed()
        history = self._fit(values)
        seconds = time.perf_counter() - start
        if values["fine_tune_blocks"]:
            self.phase_two_s[int(values["fine_tune_blocks"])] = seconds
        best = min(history, key=lambda row: row.get("val_loss", np.inf))
        self.records.append(
            {**record, "status": "ok", "started_at_s": elapsed, "seconds": round(seconds, 1),
             "val_loss": round(float(best["val_loss"]), 5),
             "val_accuracy": round(float(best.get("val_accuracy", np.nan)), 5)}
        )  # fmt: skip
        log.info("trial %s (%s): val_loss %.4f in %.1f s", trial_id, kind, best["val_loss"], seconds)
        return float(best["val_loss"])

    def estimate(self, values: dict[str, Any]) -> float:
        """Seconds a trial should take, from what earlier work measured."""
        n = len(self.data.train)
        views = int(values["augmented_views"])
        missing = max(0, views - len(self.views.get(values["augment_strength"], [])))
        cost = missing * n * self.seconds_per_image + self._head_seconds()
        blocks = int(values["fine_tune_blocks"])
        if blocks:
            epochs = self.run.options.fine_tune_epochs
            guess = epochs * (PHASE_TWO_PASSES * n + len(self.data.val)) * self.seconds_per_image
            cost += self.phase_two_s.get(blocks, guess)
        return cost

    def _head_seconds(self) -> float:
        heads = [r["seconds"] for r in self.records if r.get("kind") == "head" and "seconds" in r]
        return statistics.median(heads) if heads else 0.0

    def _fit(self, values: dict[str, Any]) -> list[dict[str, float]]:
        set_seeds(self.base.seed)
        config = trial_config(self.base, values)
        trial = dataclasses.replace(self.run, config=config, options=parse_options(config))  # its own options
        features = self._features(config, float(values["augment_strength"]), int(values["augmented_views"]))
        net = build_net(trial)
        return fit_on_features(net, trial, CachedFeatures(features), calibration=False).history

    def _features(self, config: TrainConfig, strength: float, views: int) -> TrainingData:
        cached = self.views.setdefault(strength, [])
        if len(cached) < views:
            augmentation = build_augmentation(config.augment, config.seed + len(cached))
            function = feature_function(self.backbone, augmentation)
            cached += [self.extract(function, self.data.train.images) for _ in range(views - len(cached))]
        train_features = np.concatenate([self.clean[0], *cached[:views]])
        labels = np.tile(self.data.train.labels, views + 1)
        return dataclasses.replace(
            self.data,
            train=LoadedSplit(train_features, labels, self.data.train.relpaths * (views + 1)),
            val=LoadedSplit(self.clean[1], self.data.val.labels, self.data.val.relpaths),
        )

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 1)


class OverBudget(Exception):
    """A trial that would not finish within the budget (never started)."""


def trial_kind(values: dict[str, Any], views: dict[float, list]) -> str:
    """``head`` (cached features only), ``features`` (new augmented views) or ``fine-tune``."""
    if int(values["fine_tune_blocks"]):
        return "fine-tune"
    if int(values["augmented_views"]) > len(views.get(values["augment_strength"], [])):
        return "features"
    return "head"


def run_search(runner: TrialRunner, trials: int, seed: int, directory: str) -> None:
    """keras-tuner's Bayesian optimisation over :func:`search_space`, one trial at a time, until
    ``trials`` are done or the budget is spent."""
    import keras_tuner as kt

    oracle = kt.oracles.BayesianOptimizationOracle(
        objective=kt.Objective("val_loss", "min"),
        max_trials=trials,
        num_initial_points=min(trials, 4),
        seed=seed,
        max_consecutive_failed_trials=trials,
    )

    class Search(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            values = search_space(trial.hyperparameters)
            try:
                return {"val_loss": runner(trial.trial_id, values)}
            except OverBudget as exc:
                raise kt.errors.FailedTrialError(str(exc)) from None
            finally:
                if runner.remaining() <= runner.estimate(_cheapest(values)):
                    self.oracle.max_trials = len(self.oracle.trials)  # the budget is spent: stop

    Search(oracle, directory=directory, project_name="keras-tuner", overwrite=True).search(verbose=0)


def _cheapest(values: dict[str, Any]) -> dict[str, Any]:
    return {**values, "augmented_views": 0, "fine_tune_blocks": 0}


def best_trial(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [r for r in records if r["status"] == "ok"]
    return min(done, key=lambda r: r["val_loss"]) if done else None


@dataclass(frozen=True)
class TuneResult:
    """The bundle trained with the best settings, every trial's record, and where time went."""

    train: TrainResult
    trials: list[dict[str, Any]]
    best: dict[str, Any]
    search_s: float
    final_s: float


def tune(config: TuneConfig) -> TuneResult:
    """Search, then train the bundle with the best trial's settings into ``config.train.out_dir``,
    with ``trials.csv`` and ``trials.png`` beside it and ``extra.tuning`` in ``bundle.json``."""
    started = time.perf_counter()
    run = start_run(config.train)  # the output folder checked before the search, not after it
    base, data = run.config, run.data
    if not len(data.val):
        raise DatasetError(f"tune needs a validation split; {base.data_dir} gave none (use --val-split > 0)")
    runner = TrialRunner(run, config.budget_minutes * 60, started)
    with tempfile.TemporaryDirectory() as state:  # keras-tuner's own files; trials.csv is the record
        run_search(runner, config.trials, base.seed, state)
    search_s = time.perf_counter() - started
    best = best_trial(runner.records)
    if best is None:
        raise DatasetError(
            f"no trial finished within {config.budget_minutes:g} minutes; raise --budget-minutes"
        )
    search = Search(runner.records, best, search_s)
    result = train(  # the trials go into the staged bundle, so it appears with them
        trial_config(base, best),
        data=data,
        before_commit=lambda staging, spec: write_trials(staging, spec, search, config),
    )
    final_s = time.perf_counter() - started - search_s
    return TuneResult(result, runner.records, best, search_s, final_s)


@dataclass(frozen=True)
class Search:
    """What the search found: every trial's record, the best finished one, and its seconds."""

    records: list[dict[str, Any]]
    best: dict[str, Any]
    seconds: float


def write_trials(bundle_dir: Path, spec: BundleSpec, search: Search, config: TuneConfig) -> BundleSpec:
    """``trials.csv`` and ``trials.png`` into ``bundle_dir``; returns ``spec`` with ``extra.tuning``
    (model_id unchanged), for training to write."""
    import pandas as pd

    records, best, search_s = search.records, search.best, search.seconds
    with atomic.atomic_path(bundle_dir / "trials.csv") as tmp:
        pd.DataFrame(records).to_csv(tmp, index=False)
    plot_trials(records, config.budget_minutes * 60, bundle_dir / "trials.png")
    tuning = {
        "trials_asked": config.trials,
        "trials_run": sum(r["status"] == "ok" for r in records),
        "over_budget": sum(r["status"] == "over budget" for r in records),
        "budget_minutes": config.budget_minutes,
        "search_s": round(search_s, 1),
        "objective": "val_loss",
        "best": {
            k: best[k] for k in (*HEAD_SETTINGS, *FEATURE_SETTINGS, "trial", "val_loss", "val_accuracy")
        },
    }
    return dataclasses.replace(spec, extra={**spec.extra, "tuning": tuning})
