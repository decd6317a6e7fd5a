"""A paired bootstrap of two models' predictions on the same labelled images: the difference in
accuracy and macro F1 (first minus second), and its one-sided 95% lower bound. Shared by the
promotion gate (candidate against current) and the int8 gate (int8 graph against float graph)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95  # one-sided: the lower bound is the 5th percentile of the differences
CHUNK = 250  # resamples per matrix product, so memory stays at CHUNK x holdout size


@dataclass(frozen=True)
class Bootstrap:
    """Observed differences (candidate - current) and their one-sided 95% lower bounds."""

    resamples: int
    seed: int
    accuracy_diff: float
    macro_f1_diff: float
    accuracy_lower: float
    macro_f1_lower: float


def paired_bootstrap(
    y_true: np.ndarray,
    candidate: np.ndarray,
    current: np.ndarray,
    num_classes: int,
    resamples: int = 2000,
    seed: int = 0,
) -> Bootstrap:
    """Resample the holdout's images with replacement ``resamples`` times (seeded); score both
    models' predicted class indices on each resample; the lower bound is the 5th percentile."""
    y_true = np.asarray(y_true, dtype=np.int64)
    n = len(y_true)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        picks = rng.integers(0, n, size=(rows, n))  # the same resampled images for both models
        counts = np.bincount((np.arange(rows)[:, None] * n + picks).ravel(), minlength=rows * n)
        counts = counts.reshape(rows, n).astype(np.float64)
        diffs.append(
            _scores(counts, y_true, candidate, num_classes) - _scores(counts, y_true, current, num_classes)
        )
    diff = np.concatenate(diffs, axis=1)
    observed = _scores(np.ones((1, n)), y_true, candidate, num_classes) - _scores(
        np.ones((1, n)), y_true, current, num_classes
    )
    lower = np.quantile(diff, 1 - CONFIDENCE, axis=1)
    return Bootstrap(
        resamples=resamples,
        seed=seed,
        accuracy_diff=round(float(observed[0, 0]), 5),
        macro_f1_diff=round(float(observed[1, 0]), 5),
        accuracy_lower=round(float(lower[0]), 5),
        macro_f1_lower=round(float(lower[1]), 5),
    )


def _scores(counts: np.ndarray, y_true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(2, resamples): accuracy and macro F1 (over classes present in the resample) when image i
    is counted ``counts[r, i]`` times; F1 = 2 TP / (support + predicted), as in the metrics."""
    truth, guess = np.eye(k)[y_true], np.eye(k)[np.asarray(predicted, dtype=np.int64)]
    accuracy = counts @ (y_true == predicted).astype(np.float64) / counts.sum(axis=1)
    tp, support, guessed = counts @ (truth * guess), counts @ truth, counts @ guess
    f1 = np.divide(2 * tp, support + guessed, out=np.zeros_like(tp), where=support + guessed > 0)
    present = support > 0
    return np.stack([accuracy, (f1 * present).sum(axis=1) / present.sum(axis=1)])
