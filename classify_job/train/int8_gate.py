"""The int8 graph earns its place the way a candidate model earns promotion: judged against the
float graph on the same labelled images, with the burden of proof on the int8 graph.

Both graphs run on the bundle's test split (or the labelled folder ``--data``). The int8 graph is
refused when, over a paired bootstrap of those images (:mod:`classify_job.train.bootstrap`), the
one-sided 95% lower bound of its accuracy minus the float graph's is below -:data:`MAX_ACCURACY_DROP`,
or when, at the bundle's accept thresholds (:class:`~classify_job.decisions.rule.DecisionRule` on
the int8 probabilities), a class's accepted labels fall below the target precision where the float
graph's did not (a model short of its target on these images is the model's doing, not int8's).
Top-1 agreement and the largest probability difference are recorded beside, as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.bundle import BundleSpec
from classify_job.decisions.calibration import HeldOut
from classify_job.decisions.rule import ACCEPT, DEFAULT_TARGET_PRECISION, DecisionRule
from classify_job.errors import DatasetError, InputError
from classify_job.train.bootstrap import paired_bootstrap
from classify_job.train.dataset import load_split
from classify_job.train.evaluate import labelled_files

MAX_ACCURACY_DROP = 0.005  # half a point, at the bootstrap's 5th percentile
RESAMPLES = 2000
GATE_IMAGES = 2000  # at most, evenly spaced over the split
CALIBRATION_IMAGES = 256  # training images that set the activation ranges


@dataclass(frozen=True)
class Labelled:
    """Decoded uint8 images, their true label indices and where they come from."""

    pixels: np.ndarray
    labels: np.ndarray
    source: str

    def seen(self, outputs: tuple[np.ndarray, np.ndarray], how: str) -> HeldOut:
        """These labels with a graph's (probabilities, features) of the images, ``how`` they were seen."""
        return HeldOut(outputs[0], self.labels, outputs[1], f"{self.source}, {how}")


def _training_root(spec: BundleSpec) -> Path | None:
    trained_on = spec.training_dir
    return trained_on if trained_on is not None and trained_on.is_dir() else None


def _load(root: Path, split: str, spec: BundleSpec, limit: int) -> Labelled:
    try:
        samples = labelled_files(root, split, spec.labels, spec.extra)
    except DatasetError as exc:
        raise InputError(f"cannot read the labelled images of {root}: {exc}; give --data DIR") from exc
    samples = samples[:: max(1, len(samples) // limit)][:limit]
    loaded = load_split(root, samples, spec.image_size, spec.color_mode)
    which = "images" if split == "all" else f"{split} split"
    return Labelled(loaded.images, np.asarray(loaded.labels, np.int64), f"the {which} of {root}")


def gate_images(spec: BundleSpec, data: Path | None) -> Labelled:
    """The labelled images the gate judges on: ``data`` (class folders) if given, else the test split
    of the folder the bundle was trained on."""
    if data is not None:
        found = _load(Path(data), "all", spec, GATE_IMAGES)
    else:
        root = _training_root(spec)
        if root is None:
            raise InputError("the bundle's training data is not here; give --data DIR (class folders)")
        found = _load(root, "test", spec, GATE_IMAGES)
    if len(found.labels) == 0:
        raise InputError(f"no readable labelled images in {found.source} to judge the int8 graph on")
    return found


def calibration_images(spec: BundleSpec, data: Path | None) -> np.ndarray:
    """Up to CALIBRATION_IMAGES of the bundle's training split, decoded as classify decodes them;
    the images of ``data`` when the training folder is not here."""
    root = _training_root(spec)
    pixels = _load(root, "train", spec, CALIBRATION_IMAGES).pixels if root is not None else None
    if pixels is None or len(pixels) == 0:
        pixels = gate_images(spec, data).pixels[:CALIBRATION_IMAGES]
    return pixels


@dataclass(frozen=True)
class Verdict:
    """The gate's figures (recorded in the export entry) and why the int8 graph was refused."""

    figures: dict[str, Any]
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons


def judge(
    bundle_dir: Path,
    spec: BundleSpec,
    images: Labelled,
    float_out: tuple[np.ndarray, np.ndarray],
    int8_out: tuple[np.ndarray, np.ndarray],
    rule: DecisionRule | None = None,
    int8_rule: DecisionRule | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Verdict:
    """Compare the int8 graph's (probabilities, features) with the float graph's on ``images``;
    accepted labels are decided by ``rule`` (the bundle's own unless given), the int8 graph's by
    ``int8_rule`` when it has one of its own."""
    y_true = images.labels
    ours, theirs = int8_out[0].argmax(axis=1), float_out[0].argmax(axis=1)
    boot = paired_bootstrap(y_true, ours, theirs, len(spec.labels), resamples, seed)
    figures: dict[str, Any] = {
        "images": len(y_true),
        "source": images.source,
        "top1_agreement": round(float((ours == theirs).mean()), 5),
        "max_abs_prob_diff": round(float(np.abs(int8_out[0] - float_out[0]).max()), 5),
        "accuracy_float": round(float((theirs == y_true).mean()), 5),
        "accuracy_int8": round(float((ours == y_true).mean()), 5),
        "accuracy_diff": boot.accuracy_diff,
        "accuracy_diff_lower_95": boot.accuracy_lower,
        "max_accuracy_drop": MAX_ACCURACY_DROP,
        "bootstrap": {"resamples": boot.resamples, "seed": boot.seed},
    }
    reasons = []
    if boot.accuracy_lower < -MAX_ACCURACY_DROP:
        reasons.append(
            f"accuracy: int8 - float is {boot.accuracy_diff:+.4f}, and its 95% lower bound "
            f"{boot.accuracy_lower:+.4f} is below -{MAX_ACCURACY_DROP:g}"
        )
    if spec.calibration:
        rule = rule or DecisionRule.from_bundle(bundle_dir, spec)
        rules = {"float": rule, "int8": int8_rule or rule}
        accepted, precision_reasons = _accepted_precision(rules, spec, y_true, float_out, int8_out)
        figures["accepted"] = accepted
        figures["calibration_shift"] = _calibration_shift(y_true, float_out[0], int8_out[0])
        reasons += precision_reasons
    return Verdict(figures, tuple(reasons))


def _calibration_shift(y_true: np.ndarray, float_probs: np.ndarray, int8_probs: np.ndarray) -> dict:
    """The temperature each graph's probabilities would be given on these images: evidence of
    whether int8 moved the calibration (the thresholds are judged on int8 directly, above)."""
    from classify_job.decisions.calibration import fit_temperature

    return {
        "temperature_float": round(float(fit_temperature(float_probs, y_true)), 4),
        "temperature_int8": round(float(fit_temperature(int8_probs, y_true)), 4),
        "images": len(y_true),
    }


def target_precision(spec: BundleSpec, label: str) -> float:
    """The precision ``label``'s accept threshold was fitted for."""
    fitted = (spec.accept_thresholds or {}).get(label) or {}
    guarantee = (spec.calibration or {}).get("guarantee") or {}
    return float(fitted.get("target_precision") or guarantee.get("precision") or DEFAULT_TARGET_PRECISION)


def _accepted_precision(rules, spec, y_true, float_out, int8_out) -> tuple[dict, list[str]]:
    """Per class: accepted labels and their precision, each graph under its rule in ``rules``."""
    targets = {label: target_precision(spec, label) for label in spec.labels}
    outputs = {"float": float_out, "int8": int8_out}
    decided = {name: rules[name].decide(*out) for name, out in outputs.items()}
    per_graph = {name: _per_class(rules[name], y_true, d) for name, d in decided.items()}
    reasons = []
    for label, target in targets.items():
        mine, theirs = per_graph["int8"][label]["precision"], per_graph["float"][label]["precision"]
        if mine is not None and mine < target and (theirs is None or mine < theirs):
            reasons.append(
                f"accepted {label!r}: int8 precision {mine:.4f} is below the target {target:g} "
                f"(float graph: {theirs if theirs is None else round(theirs, 4)})"
            )
    same = float((decided["float"].decision == decided["int8"].decision).mean())
    unfamiliar = "applied" if rules["float"].score is not None else "not applied"
    figures = {
        "target_precision": targets,
        "unfamiliar_cutoff": unfamiliar,
        "decision_agreement": round(same, 5),
        "calibration_id": {name: rule.calibration_id for name, rule in rules.items()},
    }
    return {**figures, **per_graph}, reasons


def _per_class(rule: DecisionRule, y_true: np.ndarray, decided: Any) -> dict:
    predicted, taken = decided.probs.argmax(axis=1), decided.decision == ACCEPT
    out = {}
    for c, label in enumerate(rule.labels):
        mine = taken & (predicted == c)
        right = int((mine & (y_true == c)).sum())
        out[label] = {
            "accepted": int(mine.sum()),
            "precision": round(right / int(mine.sum()), 4) if mine.any() else None,
        }
    return out
