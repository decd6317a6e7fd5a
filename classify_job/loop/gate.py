"""The promotion gate: a frozen holdout, the candidate and the current model evaluated on it, and a
paired bootstrap that puts the burden of proof on the candidate.

The candidate passes when, over ``resamples`` bootstrap resamples of the holdout images (the same
resampled images for both models, so what the two get right together cancels out), the one-sided
95% lower bound (5th percentile) of candidate minus current is at least ``-margin`` for accuracy
and for macro F1. Precision of accepted labels and calibration error are measured beside, as
evidence for a person; they do not decide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.bundle import Bundle, BundleSpec
from classify_job.config import check, coerce_paths, resolve
from classify_job.decisions.calibration import calibration_figures
from classify_job.decisions.rule import ACCEPT, DecisionRule
from classify_job.errors import BundleError, DatasetError, InputError
from classify_job.hashing import content_hash, content_prefixes
from classify_job.train.bootstrap import Bootstrap, paired_bootstrap
from classify_job.train.dataset import BadFile, LabelledFile, list_classes_loose, load_split
from classify_job.train.evaluate import labelled_files, predict_with_features
from classify_job.train.metrics import report_from_probs
from classify_job.walk import fs_path

MIN_PER_CLASS = 30
REQUIRED = {"bundle": "BUNDLE", "registry": "--registry", "holdout": "--holdout"}


@dataclass(frozen=True)
class PromoteConfig:
    """Everything one ``promote`` needs, from flags and the ``[promote]`` table of a job file."""

    bundle: Path
    registry: Path
    holdout: Path
    accept_new_holdout: bool = False
    shadow: Path | None = None
    shadow_limit: int = 2000
    margin_accuracy: float = 0.01
    margin_macro_f1: float = 0.01
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        coerce_paths(self)
        check(
            self,
            {
                "margin_accuracy": (0 <= self.margin_accuracy < 1, "in [0, 1)"),
                "margin_macro_f1": (0 <= self.margin_macro_f1 < 1, "in [0, 1)"),
                "resamples": (self.resamples >= 100, "at least 100"),
                "shadow_limit": (self.shadow_limit >= 1, "at least 1"),
            },
        )

    @classmethod
    def resolve(cls, job_file: Path | None = None, **flags: Any) -> PromoteConfig:
        """From ``[promote]`` in ``job_file`` and the flags given (None = not given); flags win."""
        return resolve(cls, job_file, "promote", REQUIRED, **flags)

    def margins(self) -> dict[str, float]:
        return {"accuracy": self.margin_accuracy, "macro_f1": self.margin_macro_f1}


@dataclass(frozen=True)
class Holdout:
    """The labelled images both models are judged on, with each file's SHA-256."""

    root: Path
    labels: tuple[str, ...]
    samples: tuple[LabelledFile, ...]
    digests: tuple[str, ...]

    @property
    def y_true(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def per_class(self) -> dict[str, int]:
        counts = np.bincount(self.y_true, minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, counts, strict=True)}

    def fingerprint(self) -> str:
        """Hash of the sorted ``class, content hash`` pairs: the same images under the same classes,
        wherever they lie and whatever they are called."""
        lines = sorted(
            f"{self.labels[s.label]}\t{d}\n" for s, d in zip(self.samples, self.digests, strict=True)
        )
        return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.root.resolve()),
            "fingerprint": self.fingerprint(),
            "images": len(self.samples),
            "per_class": self.per_class(),
        }


def read_holdout(root: Path, spec: BundleSpec, workers: int = 4) -> Holdout:
    """The holdout folder (one subfolder per class, the bundle's labels exactly), each file hashed."""
    if not root.is_dir():
        raise InputError(f"holdout folder not found: {root}")
    folders = set(list_classes_loose(root))
    if folders != set(spec.labels):
        raise DatasetError(
            f"the holdout's class folders must be the bundle's labels. Received: missing "
            f"{sorted(set(spec.labels) - folders)}, not labels {sorted(folders - set(spec.labels))} in {root}"
        )
    samples = labelled_files(root, "all", spec.labels, spec.extra)
    return Holdout(root, spec.labels, samples, hash_files(root, samples, workers))


def hash_files(root: Path, samples: Sequence[LabelledFile], workers: int = 4) -> tuple[str, ...]:
    """SHA-256 of each sample's bytes (hashlib releases the GIL, so threads overlap the reads)."""

    def digest(sample: LabelledFile) -> str:
        path = fs_path(root, sample.relpath, sample.relpath_bytes)
        try:
            return content_hash(path)
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return tuple(pool.map(digest, samples))


def too_few(holdout: Holdout) -> str | None:
    """Why the holdout is too small to judge on, or None."""
    small = {label: n for label, n in holdout.per_class().items() if n < MIN_PER_CLASS}
    if not small:
        return None
    return f"the holdout needs at least {MIN_PER_CLASS} images per class; it has {small}"


def training_prefixes(bundle_dir: Path, spec: BundleSpec) -> tuple[np.ndarray | None, str]:
    """Content prefixes of the bundle's train and val images and where they come from; None (with
    the reason) when neither the bundle's record nor its training folder is there to tell."""
    record = spec.extra.get("training_hashes") or {}
    if record.get("file") and (bundle_dir / record["file"]).is_file():
        try:
            return np.load(bundle_dir / record["file"]), f"{record['file']} in the bundle"
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {bundle_dir / record['file']}: {exc}") from exc
    data_dir = spec.training_dir
    if data_dir is None or not data_dir.is_dir():
        why = (
            "it records no training folder" if data_dir is None else f"its training folder {data_dir} is gone"
        )
        return None, f"the bundle has no training_hashes.npy (trained by an older version) and {why}"
    try:
        root = Path(data_dir)
        samples = [
            s for split in ("train", "val") for s in labelled_files(root, split, spec.labels, spec.extra)
        ]
        return content_prefixes(hash_files(root, samples)), f"the files of its training folder {data_dir}"
    except DatasetError as exc:
        return None, f"the bundle has no training_hashes.npy and its training folder cannot be read: {exc}"


def training_overlap(holdout: Holdout, bundle_dir: Path, spec: BundleSpec) -> str | None:
    """Why the holdout cannot judge this bundle (it shares images with its training data), or None."""
    prefixes, source = training_prefixes(bundle_dir, spec)
    if prefixes is None:
        return f"cannot check the holdout against the candidate's training data: {source}"
    per_file = np.array([content_prefixes([d])[0] for d in holdout.digests], dtype=np.uint64)
    shared = np.isin(per_file, prefixes)
    if not shared.any():
        return None
    examples = [s.relpath for s, hit in zip(holdout.samples, shared, strict=True) if hit][:3]
    return (
        f"{int(shared.sum())} holdout images are also in the candidate's training data "
        f"(by content hash, from {source}), e.g. {examples}"
    )


@dataclass(frozen=True)
class Scored:
    """One bundle's calibrated probabilities (in its own label order) and decisions for the files
    it could read."""

    labels: tuple[str, ...]
    relpaths: tuple[str, ...]
    probs: np.ndarray
    decision: np.ndarray
    bad_files: tuple[BadFile, ...]

    def probs_in(self, order: Sequence[str]) -> np.ndarray:
        """The probabilities with their columns in ``order`` (the same labels, maybe reordered)."""
        return self.probs[:, [self.labels.index(label) for label in order]]

    def predicted_labels(self) -> list[str]:
        return [self.labels[i] for i in self.probs.argmax(axis=1)]


def score_files(bundle: Bundle, root: Path, samples: Sequence[LabelledFile], workers: int = 4) -> Scored:
    """Decode ``samples`` as the bundle wants them, predict, and decide as classify would."""
    spec = bundle.spec
    loaded = load_split(root, samples, spec.image_size, spec.color_mode, workers)
    raw, features = predict_with_features(bundle.model, loaded.images)
    decided = DecisionRule.from_bundle(bundle.path, spec).decide(raw, features)
    return Scored(spec.labels, loaded.relpaths, decided.probs, decided.decision, loaded.bad_files)


@dataclass(frozen=True)
class ModelFigures:
    """One model on the holdout: the two figures that decide, and the evidence shown beside them.

    ``accepted`` (None for a bundle without accept thresholds): per class, its threshold (None:
    never accepted), the labels accepted as classify would accept them, how many were right, and
    their precision (None when none was)."""

    model_id: str
    accuracy: float
    macro_f1: float
    ece: float
    f1: dict[str, float]
    accepted: dict[str, dict[str, Any]] | None


def measure(spec: BundleSpec, holdout: Holdout, scored: Scored) -> ModelFigures:
    """Accuracy, macro F1, per-class F1, ECE and precision at the accept thresholds on ``holdout``."""
    probs, y_true = scored.probs_in(holdout.labels).astype(np.float64), holdout.y_true
    report = report_from_probs(holdout.labels, y_true, probs, scored.relpaths, "holdout")
    accepted = None
    if spec.accept_thresholds:
        predicted, taken = probs.argmax(axis=1), scored.decision == ACCEPT
        accepted = {}
        for c, label in enumerate(holdout.labels):
            mine = taken & (predicted == c)
            right = int((mine & (y_true == c)).sum())
            precision = round(right / int(mine.sum()), 4) if mine.any() else None
            threshold = (spec.accept_thresholds.get(label) or {}).get("threshold")
            accepted[label] = {
                "threshold": threshold,
                "accepted": int(mine.sum()),
                "correct": right,
                "precision": precision,
            }
    return ModelFigures(
        model_id=spec.model_id,
        accuracy=round(report.accuracy, 5),
        macro_f1=round(report.macro_f1, 5),
        ece=calibration_figures(probs, y_true)["ece"],
        f1={c.label: round(c.f1, 4) for c in report.per_class},
        accepted=accepted,
    )


def refusals(boot: Bootstrap, margin_accuracy: float, margin_macro_f1: float) -> tuple[str, ...]:
    """Why the candidate is refused (empty: it passes): each lower bound below its margin."""
    reasons = []
    for name, lower, diff, margin in (
        ("accuracy", boot.accuracy_lower, boot.accuracy_diff, margin_accuracy),
        ("macro F1", boot.macro_f1_lower, boot.macro_f1_diff, margin_macro_f1),
    ):
        if lower < -margin:
            reasons.append(
                f"{name}: candidate - current is {diff:+.4f}, and its 95% lower bound {lower:+.4f} "
                f"is below -{margin:g}"
            )
    return tuple(reasons)


@dataclass(frozen=True)
class Comparison:
    """Both models on one holdout, the bootstrap (None without a current model) and the verdict."""

    candidate: ModelFigures
    current: ModelFigures | None
    bootstrap: Bootstrap | None
    reasons: tuple[str, ...]


def compare(candidate: Bundle, current: Bundle | None, holdout: Holdout, config: PromoteConfig) -> Comparison:
    """Evaluate both bundles on ``holdout`` and judge the candidate (no current model: it passes)."""
    scored = [_score_holdout(b, holdout) for b in (candidate, current) if b is not None]
    figures = [measure(b.spec, holdout, s) for b, s in zip((candidate, current), scored, strict=False)]
    if current is None:
        return Comparison(figures[0], None, None, ())
    predicted = [s.probs_in(holdout.labels).argmax(axis=1) for s in scored]
    boot = paired_bootstrap(holdout.y_true, *predicted, len(holdout.labels), config.resamples, config.seed)
    return Comparison(
        figures[0], figures[1], boot, refusals(boot, config.margin_accuracy, config.margin_macro_f1)
    )


def _score_holdout(bundle: Bundle, holdout: Holdout) -> Scored:
    scored = score_files(bundle, holdout.root, holdout.samples)
    if scored.bad_files:
        bad = [f"{b.relpath}: {b.reason}" for b in scored.bad_files[:3]]
        raise DatasetError(f"the holdout has {len(scored.bad_files)} unreadable images; remove them: {bad}")
    return scored
