"""Give a bundle its decision rule: calibration, accept thresholds and the unfamiliar cut-off,
fitted on held-out predictions and measured on the test split; written into ``bundle.json``
(``calibration``, ``accept_thresholds``, ``unfamiliar``), ``unfamiliar.npz`` and ``calibration.png``.

:func:`fit_rule` computes it all in memory (a :class:`FittedRule`: the keys and the files);
training writes its files and puts its keys into the one ``bundle.json`` it writes.
:func:`fit_decision_rule` does both on a bundle folder (``classify-job calibrate``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.bundle import BundleSpec, write_spec
from classify_job.decisions.attributes import Attribute
from classify_job.decisions.calibration import (
    CLASS,
    SCOPES,
    SHRINKAGE,
    HeldOut,
    attribute_thresholds,
    calibration_figures,
    fit_temperature,
    fit_thresholds,
    fit_unfamiliar,
    reliability,
    tradeoff_curves,
    unfamiliar_cutoff,
)
from classify_job.decisions.rule import DEFAULT_TARGET_PRECISION, DecisionRule, UnfamiliarScore, calibrate
from classify_job.errors import InputError
from classify_job.hashing import content_hash, content_hash_bytes
from classify_job.train.dataset import TrainingData
from classify_job.train.evaluate import predict_with_features
from classify_job.train.fit import Fitted
from classify_job.train.plots import plot_reliability

UNFAMILIAR_FILE = "unfamiliar.npz"
FAMILIAR_RECALL = 0.95


REFERENCE_IMAGES = 5000  # training images whose features shape the unfamiliar score


@dataclass(frozen=True)
class RuleChoice:
    """What a user asks of the decision rule: the precision of accepted labels (``target``) and
    what that promise covers (``scope``: ``class`` or ``overall``)."""

    target: float = DEFAULT_TARGET_PRECISION
    scope: str = CLASS

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise InputError(f"--target-precision must be in (0, 1). Received: {self.target}")
        if self.scope not in SCOPES:
            raise InputError(
                f"--precision-scope must be one of {', '.join(SCOPES)}. Received: {self.scope!r}"
            )


@dataclass(frozen=True)
class KeptScore:
    """An unfamiliar score a recalibration keeps: its parameters and the SHA-256 of its file."""

    score: UnfamiliarScore
    sha256: str


@dataclass(frozen=True)
class CalibrationSets:
    """``held_out``: predictions the model never trained on (temperature, thresholds);
    ``reference``: training images' features (the unfamiliar score's centroids and covariance);
    ``familiar``: images outside the reference (the unfamiliar cut-off: a score's quantile is only
    honest on images that did not shape it); ``kept``: the score to keep instead of fitting one
    on ``reference`` (a recalibration)."""

    held_out: HeldOut
    reference: HeldOut | None
    familiar: HeldOut
    kept: KeptScore | None = None


def calibration_data(net: Any, data: TrainingData, fitted: Fitted) -> CalibrationSets | None:
    """The recipe's own held-out predictions when it has them (out-of-fold on cached features),
    else the validation split; a sample of training images through the model as the reference.
    None without a validation split: nothing held out to fit on."""
    if not len(data.val):
        return None
    probs, features = predict_with_features(net, data.val.images)
    validation = HeldOut(probs, data.val.labels, features, "the validation split", (data.val.images,))
    reference = fitted.reference
    if reference is None:
        pick = np.random.default_rng(0).permutation(len(data.train))[:REFERENCE_IMAGES]
        _, features = predict_with_features(net, data.train.images[pick])
        reference = HeldOut(np.zeros((len(pick), 0)), data.train.labels[pick], features, "training images")
    return CalibrationSets(fitted.held_out or validation, reference, validation)


@dataclass(frozen=True)
class FittedRule:
    """A fitted decision rule: the keys ``bundle.json`` records (``calibration``,
    ``accept_thresholds``, ``unfamiliar``), the bytes of ``unfamiliar.npz`` (None when the score
    was kept: its file is already in the bundle), the reliability of the test predictions
    before and after calibration (None without a test split) that ``calibration.png`` draws, and
    the rule itself, as :meth:`DecisionRule.from_bundle` would read it back."""

    calibration: dict[str, Any]
    accept_thresholds: dict[str, Any]
    unfamiliar: dict[str, Any]
    unfamiliar_npz: bytes | None
    reliability: tuple[Any, Any] | None
    rule: DecisionRule

    def keys(self) -> dict[str, Any]:
        """The keys ``bundle.json`` (or an export entry serving its own rule) records."""
        return {
            "calibration": self.calibration,
            "accept_thresholds": self.accept_thresholds,
            "unfamiliar": self.unfamiliar,
        }

    def recorded_in(self, spec: BundleSpec) -> BundleSpec:
        """``spec`` with this rule's keys."""
        return dataclasses.replace(spec, **self.keys())

    def write_files(self, bundle_dir: Path) -> None:
        """``unfamiliar.npz`` (when refitted) and ``calibration.png`` (when measured) into ``bundle_dir``."""
        if self.unfamiliar_npz is not None:
            atomic.write_bytes(bundle_dir / UNFAMILIAR_FILE, self.unfamiliar_npz)
        if self.reliability is not None:
            plot_reliability(*self.reliability, bundle_dir / "calibration.png")


def fit_decision_rule(
    bundle_dir: Path,
    spec: BundleSpec,
    sets: CalibrationSets,
    test: HeldOut | None,
    choice: RuleChoice = RuleChoice(),
    score: UnfamiliarScore | None = None,
    attributes: tuple[Attribute, ...] = (),
) -> BundleSpec:
    """:func:`fit_rule` for the bundle in ``bundle_dir`` (``score``: the one its ``unfamiliar.npz``
    holds, kept); writes its files and its ``bundle.json`` (once) and returns the new spec."""
    if score is not None:
        sets = dataclasses.replace(sets, kept=KeptScore(score, content_hash(bundle_dir / UNFAMILIAR_FILE)))
    rule = fit_rule(spec, sets, test, choice, attributes)
    rule.write_files(bundle_dir)
    spec = rule.recorded_in(spec)
    write_spec(bundle_dir, spec)
    return spec


def fit_rule(
    spec: BundleSpec,
    sets: CalibrationSets,
    test: HeldOut | None,
    choice: RuleChoice = RuleChoice(),
    attributes: tuple[Attribute, ...] = (),
) -> FittedRule:
    """Fit on ``sets`` (the unfamiliar score from ``sets.reference`` unless ``sets.kept`` one),
    measure on ``test``; nothing is written. ``choice``: the target and the guarantee's scope;
    ``attributes``: decided too, each with its own threshold."""
    kept, held_out, target = sets.kept, sets.held_out, choice.target
    temperature = fit_temperature(held_out.probs, held_out.labels)
    probs = calibrate(held_out.probs, temperature)
    thresholds, guarantee = fit_thresholds(probs, held_out.labels, spec.labels, target, choice.scope)
    per_attribute = attribute_thresholds(probs, held_out.labels, spec.labels, attributes, target)
    if kept is None:
        score = fit_unfamiliar(sets.reference.features, sets.reference.labels, len(spec.labels))
        buffer = io.BytesIO()
        score.save(buffer)
        npz, sha256 = buffer.getvalue(), content_hash_bytes(buffer.getvalue())
    else:
        score, npz, sha256 = kept.score, None, kept.sha256
    unfamiliar = {
        "method": "mahalanobis-nearest-centroid",
        "features": "penultimate layer",
        "shrinkage": SHRINKAGE if kept is None else spec.unfamiliar.get("shrinkage"),  # as it was fitted
        "file": UNFAMILIAR_FILE,
        "sha256": sha256,
        "cutoff": unfamiliar_cutoff(score, sets.familiar, FAMILIAR_RECALL),
        "familiar_recall": FAMILIAR_RECALL,
        "fitted_on": sets.reference.source if sets.reference else spec.unfamiliar["fitted_on"],
        "cutoff_on": sets.familiar.source,
    }
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": held_out.source,
        "images": len(held_out),
        **({"test": _test_figures(test, temperature)} if test is not None and len(test) else {}),
        "guarantee": guarantee,
        **({"attributes": per_attribute} if per_attribute else {}),
        "curves": tradeoff_curves(probs, held_out.labels, spec.labels, attributes),
    }
    calibration["calibration_id"] = _calibration_id(calibration, thresholds, unfamiliar)
    rule = DecisionRule(
        labels=spec.labels,
        temperature=float(temperature),
        calibration_id=calibration["calibration_id"],
        thresholds=tuple(thresholds.get(label, {}).get("threshold") for label in spec.labels),
        score=score,
        cutoff=unfamiliar["cutoff"],
        attributes=attributes,
        attribute_thresholds=tuple(per_attribute[a.name]["threshold"] for a in attributes),
    )  # what DecisionRule.from_bundle reads back from these keys and the file
    measured = test is not None and len(test)
    return FittedRule(
        calibration={**calibration, "expected": _expected(rule, held_out, test)},
        accept_thresholds=thresholds,
        unfamiliar=unfamiliar,
        unfamiliar_npz=npz,
        reliability=(
            reliability(test.probs, test.labels),
            reliability(calibrate(test.probs, temperature), test.labels),
        )
        if measured
        else None,
        rule=rule,
    )


def _test_figures(test: HeldOut, temperature: float) -> dict[str, Any]:
    return {
        "source": test.source,
        "before": calibration_figures(test.probs, test.labels),
        "after": calibration_figures(calibrate(test.probs, temperature), test.labels),
    }


def _calibration_id(calibration: dict, thresholds: dict, unfamiliar: dict) -> str:
    text = json.dumps([calibration, thresholds, unfamiliar], sort_keys=True, default=str)
    return "cal-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _expected(rule: DecisionRule, held_out: HeldOut, test: HeldOut | None) -> dict[str, Any]:
    """How the rule does on held-out and test images: share accepted and precision of accepted."""
    return {
        name: _outcome(rule, data)
        for name, data in (("held_out", held_out), ("test", test))
        if data and len(data)
    }


def _outcome(rule: DecisionRule, data: HeldOut) -> dict[str, Any]:
    decided = rule.decide(data.probs, data.features)
    accepted = decided.decision == "accept"
    correct = decided.probs.argmax(axis=1) == data.labels
    per_class = {}
    for c, label in enumerate(rule.labels):
        mine = accepted & (decided.probs.argmax(axis=1) == c)
        per_class[label] = {
            "accepted": int(mine.sum()),
            "precision": round(float(correct[mine].mean()), 4) if mine.any() else None,
        }
    return {
        "images": len(data),
        "share_accepted": round(float(accepted.mean()), 4),
        "precision_of_accepted": round(float(correct[accepted].mean()), 4) if accepted.any() else None,
        "per_class": per_class,
        **_attribute_outcome(rule, decided, data.labels),
    }


def _attribute_outcome(rule: DecisionRule, decided: Any, labels: np.ndarray) -> dict[str, Any]:
    """Per attribute: share accepted and precision of the accepted values; and the share of images
    with at least one attribute accepted."""
    if not rule.attributes:
        return {}
    found, any_accepted = {}, np.zeros(len(labels), bool)
    for attribute in rule.attributes:
        a = decided.attributes[attribute.name]
        accepted = a.decision == "accept"
        truth = np.asarray(attribute.values, dtype=object)[attribute.label_values(labels)]
        right = accepted & (a.value == truth)
        found[attribute.name] = {
            "share_accepted": round(float(accepted.mean()), 4),
            "precision_of_accepted": round(float(right.sum() / accepted.sum()), 4)
            if accepted.any()
            else None,
        }
        any_accepted |= accepted
    return {"attributes": found, "share_with_an_attribute_accepted": round(float(any_accepted.mean()), 4)}
