"""Fit what decides whether a label is accepted, on predictions the model never trained on.

- Temperature scaling: one T minimising the negative log-likelihood of held-out predictions.
- Per class, the lowest calibrated-confidence threshold whose one-sided 95% Clopper-Pearson lower
  bound on precision meets the target; a class without enough evidence gets none (never accepted).
- The unfamiliar score: Mahalanobis distance of the penultimate features to the nearest class
  centroid, under the training features' shrunk shared covariance, cut at the score that keeps
  ``recall`` of held-out familiar images. Measured on Fashion-MNIST (4 familiar, 4 unfamiliar
  classes): AUROC 0.997, against 0.42 for the maximum softmax probability and 0.35 for energy.

Fitting never sees the test split; :func:`calibration_figures` measures ECE, NLL and Brier there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from classify_job.decisions.rule import UnfamiliarScore

CONFIDENCE = 0.95  # of the one-sided lower bound on precision
ECE_BINS = 15
SHRINKAGE = 0.1  # of the covariance towards its mean variance


@dataclass(frozen=True)
class HeldOut:
    """Raw probabilities, true labels and penultimate features of images the model did not fit,
    and where they come from (out-of-fold predictions, the validation split, ...)."""

    probs: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising held-out NLL (golden-section search over log T in [-3, 3])."""
    logs = np.log(np.clip(probs, 1e-12, 1.0))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        z = logs / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(-(z[rows, labels] - np.log(np.exp(z).sum(axis=1))).mean())

    low, high = -3.0, 3.0
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        low, high = (low, b) if nll(a) < nll(b) else (a, high)
    return round(math.exp((low + high) / 2), 6)


def calibration_figures(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Expected calibration error (15 equal-width confidence bins), NLL and Brier score."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == labels
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
        for b in range(ECE_BINS)
        if (bins == b).any()
    )
    onehot = np.eye(probs.shape[1])[labels]
    return {
        "ece": round(float(ece), 5),
        "nll": round(float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean()), 5)
        + 0.0,  # never -0.0
        "brier": round(float(((probs - onehot) ** 2).sum(axis=1).mean()), 5),
        "accuracy": round(float(correct.mean()), 5),
        "images": len(labels),
    }


def reliability(probs: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (for the reliability diagram)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    return [
        {
            "bin": b,
            "confidence": float(confidence[m].mean()),
            "accuracy": float(correct[m].mean()),
            "count": int(m.sum()),
        }
        for b in range(ECE_BINS)
        if (m := bins == b).any()
    ]


def lower_bound(correct: np.ndarray, accepted: np.ndarray) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound on precision at :data:`CONFIDENCE`, elementwise."""
    from scipy.stats import beta

    correct, accepted = np.asarray(correct, float), np.asarray(accepted, float)
    bound = beta.ppf(1 - CONFIDENCE, np.maximum(correct, 1e-12), accepted - correct + 1)
    return np.where(correct > 0, bound, 0.0)


def needed_for(target: float) -> int:
    """Accepted predictions, all correct, that the lower bound needs to reach ``target``."""
    return math.ceil(math.log(1 - CONFIDENCE) / math.log(target))


def accept_thresholds(
    probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...], target: float
) -> dict[str, dict]:
    """Per class: the lowest threshold whose precision lower bound meets ``target``, with its evidence."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    found = {}
    for c, name in enumerate(names):
        mine = predicted == c
        order = np.argsort(-confidence[mine], kind="stable")
        conf, right = confidence[mine][order], (labels[mine] == c)[order]
        found[name] = _class_threshold(conf, right, target)
    return found


def _class_threshold(conf: np.ndarray, right: np.ndarray, target: float) -> dict:
    """``conf`` sorted high to low; accepting the first m predictions for each possible m."""
    predicted = len(conf)
    evidence = {"predicted": predicted, "target_precision": target, "needed": needed_for(target)}
    if predicted == 0:
        return {
            "threshold": None,
            **evidence,
            "accepted": 0,
            "correct": 0,
            "lower_bound": 0.0,
            "share_accepted": 0.0,
        }
    accepted = np.arange(1, predicted + 1)
    correct = np.cumsum(right)
    cut = np.r_[conf[1:] < conf[:-1], True]  # only between distinct confidences
    passing = np.flatnonzero(cut & (lower_bound(correct, accepted) >= target))
    if len(passing) == 0:
        m = int(np.flatnonzero(cut)[-1])  # report the evidence for accepting everything
        return {"threshold": None, **evidence, **_evidence(conf, correct, accepted, m), "share_accepted": 0.0}
    m = int(passing[-1])  # the most accepted predictions, i.e. the lowest threshold
    return {"threshold": round(float(conf[m]), 6), **evidence, **_evidence(conf, correct, accepted, m),
            "share_accepted": round(float(accepted[m] / predicted), 4)}  # fmt: skip


def _evidence(conf: np.ndarray, correct: np.ndarray, accepted: np.ndarray, m: int) -> dict:
    return {
        "accepted": int(accepted[m]),
        "correct": int(correct[m]),
        "precision": round(float(correct[m] / accepted[m]), 4),
        "lower_bound": round(float(lower_bound(correct[m], accepted[m])), 4),
    }


def fit_unfamiliar(features: np.ndarray, labels: np.ndarray, classes: int) -> UnfamiliarScore:
    """Class centroids and a whitening from the training features' shrunk shared covariance."""
    features = np.asarray(features, np.float64)
    present = [c for c in range(classes) if (labels == c).any()]
    centroids = np.stack([features[labels == c].mean(axis=0) for c in present])
    residuals = features - centroids[np.searchsorted(present, labels)]
    covariance = np.cov(residuals, rowvar=False)
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.trace(covariance) / len(covariance) * np.eye(
        len(covariance)
    )
    values, vectors = np.linalg.eigh(covariance)
    whitening = vectors / np.sqrt(np.maximum(values, 1e-12))
    mean = features.mean(axis=0)
    return UnfamiliarScore(
        ((centroids - mean) @ whitening).astype(np.float32),
        whitening.astype(np.float32),
        mean.astype(np.float32),
    )


def unfamiliar_cutoff(score: UnfamiliarScore, held_out: HeldOut, recall: float) -> float:
    """The score below which ``recall`` of the held-out (familiar) images fall."""
    return round(float(np.quantile(score(held_out.features), recall)), 6)
