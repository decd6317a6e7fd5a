"""Fit what decides whether a label is accepted, on predictions the model never trained on.

- Temperature scaling: one T minimising the negative log-likelihood of held-out predictions.
- Per class (or for all classes pooled), a threshold on calibrated confidence from a fixed-sequence
  test: candidate thresholds from the strictest down, each passing when the one-sided 95%
  Clopper-Pearson lower bound on precision meets the target, stopping at the first failure; a
  class whose first test fails gets none (never accepted).
- The unfamiliar score: Mahalanobis distance of the penultimate features to the nearest class
  centroid, under the training features' shrunk shared covariance, cut at the score that keeps
  ``recall`` of held-out familiar images. Measured on Fashion-MNIST (4 familiar, 4 unfamiliar
  classes): AUROC 0.997, against 0.42 for the maximum softmax probability and 0.35 for energy.

Fitting never sees the test split; :func:`calibration_figures` measures ECE, NLL and Brier there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from classify_job.decisions.attributes import Attribute
from classify_job.decisions.rule import UnfamiliarScore
from classify_job.errors import InputError

CONFIDENCE = 0.95  # of the one-sided lower bound on precision
ECE_BINS = 15
SHRINKAGE = 0.1  # of the covariance towards its mean variance
SEQUENCE_STEPS = 20  # hypotheses of the fixed-sequence test: the top 5%, 10%, ... of the predictions
TEST = "fixed-sequence, one-sided Clopper-Pearson"
CLASS, OVERALL = "class", "overall"  # what a precision guarantee covers (--precision-scope)
SCOPES = (CLASS, OVERALL)


@dataclass(frozen=True)
class HeldOut:
    """Raw probabilities, true labels and penultimate features of images the model did not fit,
    and where they come from (out-of-fold predictions, the validation split, ...); ``images``, when
    in memory, the decoded images behind the rows in row order (parts, not copied), which another
    graph can be run on (:mod:`classify_job.train.int8_rule`)."""

    probs: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    source: str
    images: tuple[np.ndarray, ...] = ()

    @property
    def has_images(self) -> bool:
        return sum(len(part) for part in self.images) == len(self) > 0

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


def candidate_cuts(conf: np.ndarray, target: float) -> np.ndarray:
    """The fixed sequence's hypotheses, strictest first, as indexes into ``conf`` (sorted high to
    low; a cut ``m`` accepts ``conf[: m + 1]``): the top 5%, 10%, ... of the predictions, each moved
    to the end of its run of equal confidences (a threshold accepts a whole tie), from the first
    that accepts :func:`needed_for` predictions (no stricter one could pass). Counts alone fix the
    sequence, never whether a prediction was right."""
    n = len(conf)
    if n == 0:
        return np.zeros(0, int)
    ranks = -(-np.arange(1, SEQUENCE_STEPS + 1) * n // SEQUENCE_STEPS) - 1  # ceil(k n / steps) - 1, exact
    tie_ends = np.r_[np.flatnonzero(conf[1:] < conf[:-1]), n - 1]
    cuts = np.unique(tie_ends[np.searchsorted(tie_ends, ranks)])
    return cuts[cuts + 1 >= needed_for(target)]


def fixed_sequence(confidence: np.ndarray, correct: np.ndarray, target: float) -> dict:
    """The loosest threshold a fixed-sequence test accepts at ``target`` precision, with its evidence.

    Learn then test: the cuts of :func:`candidate_cuts` are tested in order, strictest first, each
    at level 1 - :data:`CONFIDENCE` (is the Clopper-Pearson lower bound on the precision of the
    predictions at or above it at least ``target``?), and the sequence stops at the first that
    fails. Tests in an order fixed in advance need no correction for their number, unlike keeping
    the loosest of all the thresholds that pass. ``threshold`` None: the first test failed.
    """
    confidence = np.asarray(confidence, np.float64)
    order = np.argsort(-confidence, kind="stable")
    conf, correct_at = confidence[order], np.cumsum(np.asarray(correct, bool)[order])
    cuts = candidate_cuts(conf, target)
    failed = np.flatnonzero(lower_bound(correct_at[cuts], cuts + 1) < target)
    stop = int(failed[0]) if len(failed) else len(cuts)  # the first cut that failed
    found = {
        "predicted": len(conf),
        "target_precision": target,
        "needed": needed_for(target),
        "test": TEST,
        "alpha": round(1 - CONFIDENCE, 6),
        "tested": min(stop + 1, len(cuts)),
    }
    if stop == 0:  # report the evidence that stopped the sequence (or all predictions)
        m = int(cuts[0]) if len(cuts) else len(conf) - 1
        return {"threshold": None, **found, **_evidence(correct_at, m), "share_accepted": 0.0}
    m = int(cuts[stop - 1])
    return {"threshold": round(float(conf[m]), 6), **found, **_evidence(correct_at, m),
            "share_accepted": round((m + 1) / len(conf), 4)}  # fmt: skip


def _evidence(correct_at: np.ndarray, m: int) -> dict:
    if m < 0:
        return {"accepted": 0, "correct": 0, "precision": None, "lower_bound": 0.0}
    accepted, correct = m + 1, int(correct_at[m])
    return {
        "accepted": accepted,
        "correct": correct,
        "precision": round(correct / accepted, 4),
        "lower_bound": round(float(lower_bound(correct, accepted)), 4),
    }


def fit_thresholds(
    probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...], target: float, scope: str = CLASS
) -> tuple[dict[str, dict], dict]:
    """Per class, the threshold on calibrated confidence and its evidence; and the guarantee.

    ``scope`` "class": each class its own :func:`fixed_sequence` on its own predictions. "overall":
    one test on all predictions pooled and one threshold for every class, so the precision is
    guaranteed for all accepted labels together, not per class; each class's entry counts its own
    accepted labels at that threshold (a description, not a guarantee).
    """
    if scope not in SCOPES:
        raise InputError(f"--precision-scope must be one of {', '.join(SCOPES)}. Received: {scope!r}")
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    right = predicted == labels
    mine = [predicted == c for c in range(len(names))]
    if scope == CLASS:
        found = {name: {**fixed_sequence(confidence[m], right[m], target), "scope": CLASS}
                 for name, m in zip(names, mine, strict=True)}  # fmt: skip
        passed = sum(t["threshold"] is not None for t in found.values())
        return found, guarantee(CLASS, target, {"classes": len(names), "classes_with_threshold": passed})
    pooled = fixed_sequence(confidence, right, target)
    found = {name: _share_of(pooled, confidence[m], right[m]) for name, m in zip(names, mine, strict=True)}
    keep = ("predicted", "tested", "threshold", "accepted", "correct", "precision", "lower_bound")
    return found, guarantee(OVERALL, target, {k: pooled[k] for k in keep})


def accept_thresholds(
    probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...], target: float, scope: str = CLASS
) -> dict[str, dict]:
    """Per class, the threshold on calibrated confidence and its evidence (:func:`fit_thresholds`)."""
    return fit_thresholds(probs, labels, names, target, scope)[0]


def guarantee(scope: str, target: float, evidence: dict) -> dict:
    """What a bundle promises about accepted labels, in words and in numbers (``bundle.json``)."""
    who = {
        CLASS: "For each class with a threshold, the labels accepted for that class",
        OVERALL: "All accepted labels together (a weaker promise: one class's own precision may be lower)",
    }[scope]
    return {
        "scope": scope,
        "precision": target,
        "confidence": CONFIDENCE,
        "alpha": round(1 - CONFIDENCE, 6),
        "test": TEST,
        "statement": f"{who} have a precision of at least {target} with {CONFIDENCE:.0%} confidence, "
        "on images drawn like the held-out ones.",
        "evidence": evidence,
    }


def _share_of(pooled: dict, confidence: np.ndarray, right: np.ndarray) -> dict:
    t = pooled["threshold"]
    mine = confidence >= (np.inf if t is None else t)
    accepted, correct = int(mine.sum()), int(right[mine].sum())
    return {
        **pooled,
        "scope": OVERALL,
        "predicted": len(confidence),
        "accepted": accepted,
        "correct": correct,
        "precision": round(correct / accepted, 4) if accepted else None,
        "lower_bound": round(float(lower_bound(correct, accepted)), 4),
        "share_accepted": round(accepted / len(confidence), 4) if len(confidence) else 0.0,
    }


def tradeoff_curve(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Share accepted against precision: at each cut of the fixed sequence (the top 5%, 10%, ...
    of the predictions by confidence), its threshold, the precision of what it accepts and that
    precision's lower bound, so a target can be chosen knowing what it buys."""
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    conf, correct_at = np.asarray(confidence, np.float64)[order], np.cumsum(np.asarray(correct, bool)[order])
    cuts = candidate_cuts(conf, 0.5)  # every cut: a target of 0.5 needs a single prediction
    bounds = lower_bound(correct_at[cuts], cuts + 1)
    return [
        {
            "share_accepted": round((m + 1) / len(conf), 4),
            "threshold": round(float(conf[m]), 6),
            "precision": round(float(correct_at[m] / (m + 1)), 4),
            "lower_bound": round(float(b), 4),
        }
        for m, b in zip(cuts, bounds, strict=True)
    ]


def tradeoff_curves(
    probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...], attributes: tuple[Attribute, ...] = ()
) -> dict[str, Any]:
    """:func:`tradeoff_curve` per class (its own predictions), for all predictions together, and
    per attribute (on its marginal probability)."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    right = predicted == labels
    curves = {
        "classes": {
            n: tradeoff_curve(confidence[predicted == c], right[predicted == c]) for c, n in enumerate(names)
        },
        "overall": tradeoff_curve(confidence, right),
        "attributes": {},
    }
    for attribute in attributes:
        marginal = attribute.marginals(probs)
        hit = marginal.argmax(axis=1) == attribute.label_values(labels)
        curves["attributes"][attribute.name] = tradeoff_curve(marginal.max(axis=1), hit)
    return curves


def attribute_thresholds(
    probs: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    attributes: tuple[Attribute, ...],
    target: float,
) -> dict[str, dict]:
    """Per attribute, its definition and one threshold on its marginal probability (calibrated
    ``probs`` summed per value) from :func:`fixed_sequence` on all its held-out predictions: the
    accepted values of an attribute together meet ``target``."""
    found = {}
    for attribute in attributes:
        marginal = attribute.marginals(probs)
        right = marginal.argmax(axis=1) == attribute.label_values(labels)
        found[attribute.name] = {
            **attribute.to_json(names),
            **fixed_sequence(marginal.max(axis=1), right, target),
        }
    return found


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
