"""What to do with a prediction: accept the label, or send it to review, and why.

A bundle trained by this version carries three things (fitted by ``classify_job.decisions.fitting``):

- ``calibration``: a temperature T; calibrated probabilities are ``softmax(log(raw) / T)``, so
  only the raw probabilities are needed to calibrate again, and the top label never changes;
- ``accept_thresholds``: per class, the lowest calibrated confidence at which accepted labels met
  the target precision on held-out predictions (None: too little evidence, never auto-accepted);
- ``unfamiliar``: a score of how unlike the training images an image's penultimate features are,
  and the cut-off above which it is "none of these";
- ``calibration.attributes`` (trained with ``--attributes``): per attribute, the value each class
  carries and a threshold on the attribute's marginal probability.

A label is accepted when its confidence reaches its class's threshold and the image is not
unfamiliar; an attribute's value likewise, against the attribute's own threshold. Bundles without
calibration keep the first release's rule: review when confidence is under 0.6 or the top two
probabilities are less than 0.15 apart. The decision is made once, at classify time, and stored
with the row; reports and tagging read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.bundle import bundle_file
from classify_job.decisions.attributes import Attribute, attributes_from_json
from classify_job.errors import BundleError, InputError

ACCEPT, REVIEW = "accept", "review"
BELOW_THRESHOLD = "below class threshold"
UNFAMILIAR = "unfamiliar"
LOW_CONFIDENCE = "low confidence"
CLOSE_CALL = "top two close"
REASONS = (BELOW_THRESHOLD, UNFAMILIAR, LOW_CONFIDENCE, CLOSE_CALL)
DEFAULT_THRESHOLD, DEFAULT_MARGIN = 0.6, 0.15  # the rule for bundles without calibration
DEFAULT_TARGET_PRECISION = 0.95  # of auto-accepted labels, per class, unless train is told otherwise


def top_two_margin(probs: np.ndarray) -> np.ndarray:
    """Difference between each row's two largest probabilities (NaN where the row is NaN)."""
    if probs.shape[1] < 2:
        return np.full(len(probs), np.nan, dtype=np.float32)
    top_two = np.partition(probs, -2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def review_reasons(
    confidence: np.ndarray, margin: np.ndarray, threshold: float, min_margin: float
) -> np.ndarray:
    """The first release's rule: why each prediction needs review, ``""`` when it does not."""
    low = np.asarray(confidence) < threshold
    close = np.asarray(margin) < min_margin
    return join_reasons({LOW_CONFIDENCE: low, CLOSE_CALL: close})


def join_reasons(flags: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, the names of the true flags joined by ``"; "`` (``""`` for none), in REASONS order."""
    names = [name for name in REASONS if name in flags]
    rows = len(next(iter(flags.values()))) if flags else 0
    out = np.full(rows, "", dtype=object)
    for name in names:
        mask = np.asarray(flags[name], dtype=bool)
        out[mask] = np.where(out[mask] == "", name, out[mask] + "; " + name)
    return out


def check_review_settings(threshold: float, margin: float) -> None:
    """Reject a threshold or margin outside 0..1 with an InputError."""
    for name, value in (("threshold", threshold), ("margin", margin)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"--{name} must be between 0 and 1. Received: {value}")


def calibrate(raw: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities: ``softmax(log(raw) / T)``, rows summing to 1."""
    logits = np.log(np.clip(np.asarray(raw, np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class UnfamiliarScore:
    """Squared distance to the nearest class centroid after whitening the penultimate features
    with the training features' shrunk covariance (a Mahalanobis distance shared by all classes)."""

    centroids: np.ndarray  # (classes, rank), whitened
    whitening: np.ndarray  # (features, rank)
    mean: np.ndarray  # (features,)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float64) - self.mean) @ self.whitening
        distances = ((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        return distances.min(axis=1).astype(np.float32)

    @classmethod
    def load(cls, path: Path) -> UnfamiliarScore:
        try:
            with np.load(path, allow_pickle=False) as data:
                score = cls(*(np.asarray(data[k]) for k in ("centroids", "whitening", "mean")))
        except Exception as exc:  # a truncated or foreign file: BadZipFile, EOFError, KeyError, ...
            text = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
            raise BundleError(f"cannot read the unfamiliar-score parameters {path}: {text}") from exc
        c, w, m = score.centroids, score.whitening, score.mean
        floats = all(a.dtype.kind == "f" for a in (c, w, m))
        if (
            not floats
            or c.ndim != 2
            or w.ndim != 2
            or m.ndim != 1
            or (w.shape[0], c.shape[1]) != (m.shape[0], w.shape[1])
        ):
            raise BundleError(
                f"the unfamiliar-score parameters {path} do not fit together: centroids {c.shape}, "
                f"whitening {w.shape}, mean {m.shape}"
            )
        return score

    def save(self, path: Path) -> None:
        np.savez(path, centroids=self.centroids, whitening=self.whitening, mean=self.mean)


@dataclass(frozen=True)
class AttributeDecided:
    """Per row, one attribute: its most probable value, that value's marginal probability and the
    decision (all None on rows without a prediction)."""

    value: np.ndarray
    confidence: np.ndarray
    decision: np.ndarray


@dataclass(frozen=True)
class Decided:
    """Per row: calibrated probabilities, the unfamiliar score (NaN without one), the decision
    and the reasons for review (``""`` when accepted); and each attribute's decision by name."""

    probs: np.ndarray
    unfamiliar_score: np.ndarray
    decision: np.ndarray
    reason: np.ndarray
    attributes: dict[str, AttributeDecided] = field(default_factory=dict)


@dataclass(frozen=True)
class DecisionRule:
    """Everything a bundle says about accepting labels; ``calibration_id`` None: the old rule."""

    labels: tuple[str, ...]
    temperature: float = 1.0
    calibration_id: str | None = None
    thresholds: tuple[float | None, ...] = ()
    score: UnfamiliarScore | None = None
    cutoff: float | None = None
    attributes: tuple[Attribute, ...] = ()
    attribute_thresholds: tuple[float | None, ...] = ()

    @classmethod
    def from_bundle(cls, bundle_dir: Path, spec: Any, runtime: str | None = None) -> DecisionRule:
        """The rule ``bundle.json`` describes for the graph ``runtime`` serves (the int8 graph may
        carry its own; see :meth:`BundleSpec.rule_keys`); the old rule when it has no calibration."""
        keys = spec.rule_keys(runtime)
        calibration = keys["calibration"]
        if not calibration:
            return cls(spec.labels)
        thresholds = keys["accept_thresholds"] or {}
        unfamiliar = keys["unfamiliar"] or {}
        score, recorded = None, calibration.get("attributes") or {}
        if unfamiliar.get("file") is not None:
            path = bundle_file(bundle_dir, unfamiliar["file"], unfamiliar.get("sha256"))
            score = UnfamiliarScore.load(path)
        return cls(
            labels=spec.labels,
            temperature=float(calibration["temperature"]),
            calibration_id=calibration["calibration_id"],
            thresholds=tuple(thresholds.get(label, {}).get("threshold") for label in spec.labels),
            score=score,
            cutoff=unfamiliar.get("cutoff"),
            attributes=attributes_from_json(recorded, spec.labels),
            attribute_thresholds=tuple(a.get("threshold") for a in recorded.values()),
        )

    @property
    def needs_features(self) -> bool:
        return self.score is not None

    def decide(
        self, raw: np.ndarray, features: np.ndarray | None = None, score: np.ndarray | None = None
    ) -> Decided:
        """Decide every row of raw probabilities (NaN rows stay undecided: decision None).

        The unfamiliar score comes from ``features``, or is given (stored rows, re-decided).
        """
        raw = np.asarray(raw, np.float32)
        bad = np.isnan(raw).any(axis=1)
        probs = (
            calibrate(np.nan_to_num(raw, nan=1.0), self.temperature) if self.calibration_id else raw.copy()
        )
        probs[bad] = np.nan
        if score is None:
            score = self.score(features) if self.score is not None and features is not None else None
        score = np.full(len(raw), np.nan, np.float32) if score is None else np.asarray(score, np.float32)
        confidence = np.nanmax(np.where(bad[:, None], 0, probs), axis=1)
        flags = self._flags(probs, confidence, score)
        reason = join_reasons(flags)
        decision = np.where(reason == "", ACCEPT, REVIEW).astype(object)
        decision[bad], reason[bad] = None, None
        return Decided(probs, score, decision, reason, self._attributes(probs, bad, flags.get(UNFAMILIAR)))

    def _attributes(
        self, probs: np.ndarray, bad: np.ndarray, unfamiliar: np.ndarray | None
    ) -> dict[str, AttributeDecided]:
        """Each attribute: accepted when its value's marginal reaches the attribute's threshold and
        the image is not unfamiliar."""
        decided = {}
        for attribute, threshold in zip(self.attributes, self.attribute_thresholds, strict=True):
            marginal = attribute.marginals(np.nan_to_num(probs))
            confidence = marginal.max(axis=1)
            accept = confidence >= (np.inf if threshold is None else threshold)
            if unfamiliar is not None:
                accept &= ~unfamiliar
            value = np.asarray(attribute.values, dtype=object)[marginal.argmax(axis=1)]
            decision = np.where(accept, ACCEPT, REVIEW).astype(object)
            value[bad], decision[bad] = None, None
            decided[attribute.name] = AttributeDecided(value, np.where(bad, np.nan, confidence), decision)
        return decided

    def _flags(self, probs: np.ndarray, confidence: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
        if self.calibration_id is None:
            margin = top_two_margin(np.nan_to_num(probs))
            return {LOW_CONFIDENCE: confidence < DEFAULT_THRESHOLD, CLOSE_CALL: margin < DEFAULT_MARGIN}
        label = np.nan_to_num(probs, nan=-1).argmax(axis=1)
        limits = np.array([np.inf if t is None else t for t in self.thresholds], np.float64)
        flags = {BELOW_THRESHOLD: confidence < limits[label]}
        if self.cutoff is not None:
            flags[UNFAMILIAR] = np.nan_to_num(score, nan=np.inf) > self.cutoff
        return flags


DECISION_COLUMNS = ("status", "confidence", "decision", "review_reason")


def stored_decisions(batch: Any, threshold: float = DEFAULT_THRESHOLD, margin: float = DEFAULT_MARGIN):
    """(decision, reason) per row of a Parquet batch read with DECISION_COLUMNS and its
    ``prob_<label>`` columns: the decision stored at classify time, or, for rows written before
    decisions were stored, the old rule at ``threshold`` and ``margin``. None on error rows."""
    from classify_job.predictions import prob_matrix

    decision = np.array(batch.column("decision").to_pylist(), dtype=object)
    reason = np.array([r or "" for r in batch.column("review_reason").to_pylist()], dtype=object)
    ok = np.array([s == "ok" for s in batch.column("status").to_pylist()], dtype=bool)
    old = ok & np.array([d is None for d in decision], dtype=bool)
    if old.any():
        confidence = batch.column("confidence").to_numpy(zero_copy_only=False)
        legacy = review_reasons(confidence, top_two_margin(prob_matrix(batch)[1]), threshold, margin)
        reason[old] = legacy[old]
        decision[old] = np.where(legacy[old] == "", ACCEPT, REVIEW)
    decision[~ok], reason[~ok] = None, None
    return decision, reason
