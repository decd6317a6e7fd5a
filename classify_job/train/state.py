"""What one training passes from stage to stage: the run it was given, and the network it fitted.

:class:`TrainRun` is built once, when ``train`` starts (the architecture's ``arch_options`` parsed
there, once); each stage takes it whole, and a phase that trains on other data or at another rate
passes on a ``dataclasses.replace`` of it. :class:`Trained` is what the bundle is written from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from classify_job.decisions.calibration import HeldOut
from classify_job.train.config import TrainConfig
from classify_job.train.dataset import TrainingData
from classify_job.train.fit import EpochInfo, Fitted, fit
from classify_job.train.metrics import EvaluationReport


@dataclass(frozen=True)
class TrainRun:
    """One training's inputs: its settings, its architecture's ``arch_options`` parsed (e.g.
    :class:`~classify_job.train.finetune.FinetuneOptions`), the decoded data, the class weights
    (None: unweighted) and the progress hooks (``on_epoch`` after every epoch, ``callbacks``
    extra Keras callbacks)."""

    config: TrainConfig
    data: TrainingData
    options: Any = None
    weights: dict[int, float] | None = None
    on_epoch: Callable[[EpochInfo], None] | None = None
    callbacks: Sequence[Any] = ()


@dataclass(frozen=True)
class Trained:
    """A fitted network with what its training found: the recipe's :class:`Fitted` (history,
    facts, held-out predictions), and the kept weights on the held-out split (``test``: its
    predictions, ``report``: its metrics)."""

    run: TrainRun
    net: Any
    fitted: Fitted
    test: HeldOut
    report: EvaluationReport


def fit_run(net: Any, run: TrainRun) -> list[dict[str, float]]:
    """:func:`~classify_job.train.fit.fit` on ``run``'s data, settings, weights and hooks."""
    return fit(net, run.data, run.config, run.weights, run.on_epoch, run.callbacks)
