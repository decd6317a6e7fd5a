"""``classify-job calibrate``: a copy of a bundle whose decision rule is fitted anew on a labelled
folder, without retraining; an int8 graph's own rule is refitted on the same images through it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.bundle import BundleSpec, bundle_file, load_bundle
from classify_job.decisions.attributes import attributes_from_json
from classify_job.decisions.calibration import HeldOut
from classify_job.decisions.card import rewrite_decisions
from classify_job.decisions.fitting import CalibrationSets, RuleChoice, fit_decision_rule
from classify_job.decisions.rule import UnfamiliarScore
from classify_job.errors import DatasetError, OutputError
from classify_job.hashing import split_position
from classify_job.train.dataset import load_split
from classify_job.train.evaluate import labelled_files, predict_with_features
from classify_job.train.int8_rule import refit_bundle


def recalibrate_bundle(
    bundle_dir: Path, data: Path, out: Path, choice: RuleChoice = RuleChoice()
) -> BundleSpec:
    """A copy of ``bundle_dir`` in ``out`` with calibration, thresholds and cut-off fitted anew on the
    labelled folder ``data``: a third of it (by a stable hash of each path) to measure, the rest to
    fit. When ``data`` is the folder the bundle trained on, its training split is left out.

    The weights, and so ``model_id`` and any export's graph, are unchanged (an int8 graph's own rule
    is refitted on the same images through it); the unfamiliar score keeps its
    parameters (only its cut-off is refitted), so the scores stored in earlier rows stay valid and
    classify can re-decide them without running the model. The attributes the bundle decides
    are kept, their thresholds refitted; ``choice`` is the target and the guarantee's scope.
    """
    if out.exists():
        raise OutputError(f"{out} already exists; choose a new --out for the recalibrated bundle")
    bundle = load_bundle(bundle_dir)
    parts = _recalibration_parts(bundle, Path(data))
    if len(parts["fit"]) < 2:
        raise DatasetError(
            f"too few readable labelled images in {data} (outside the training split) to calibrate on"
        )
    unfamiliar = bundle.spec.unfamiliar or {}
    kept = None
    if unfamiliar.get("file"):  # verified where it is (inside the bundle, its recorded hash)
        kept = UnfamiliarScore.load(bundle_file(bundle_dir, unfamiliar["file"], unfamiliar.get("sha256")))
    shutil.copytree(bundle_dir, out, symlinks=True)  # a link is copied as a link, never its target
    sets = CalibrationSets(
        held_out=_joined(parts["fit"], parts["familiar"]),
        reference=None if kept else parts["fit"],
        familiar=_joined(parts["fit"], parts["familiar"]) if kept else parts["familiar"],
    )
    attributes = attributes_from_json((bundle.spec.calibration or {}).get("attributes"), bundle.spec.labels)
    spec = fit_decision_rule(out, bundle.spec, sets, parts["test"], choice, kept, attributes)
    spec = refit_bundle(out, spec, sets, parts["test"], choice, attributes)  # an int8 graph's own rule
    rewrite_decisions(out / "README.md", spec)
    return spec


def _recalibration_parts(bundle: Any, data: Path) -> dict[str, HeldOut]:
    """``data``'s labelled images (the bundle's training split excluded) cut by path hash into a
    test third and two fitting thirds, each decoded and run through the model."""
    spec = bundle.spec
    trained = (
        {s.relpath for s in labelled_files(data, "train", spec.labels, spec.extra)}
        if spec.trained_on(data)
        else set()
    )
    samples = [s for s in labelled_files(data, "all", spec.labels, spec.extra) if s.relpath not in trained]
    cuts = {"test": (0, 1 / 3), "fit": (1 / 3, 2 / 3), "familiar": (2 / 3, 1)}
    parts = {}
    for name, (low, high) in cuts.items():
        chosen = [s for s in samples if low <= split_position(s.relpath, "recalibrate:") < high]
        loaded = load_split(data, chosen, spec.image_size, spec.color_mode)
        probs, features = predict_with_features(bundle.model, loaded.images)
        parts[name] = HeldOut(probs, loaded.labels, features, f"{name} images of {data}", (loaded.images,))
    return parts


def _joined(first: HeldOut, second: HeldOut) -> HeldOut:
    return HeldOut(
        np.concatenate([first.probs, second.probs]),
        np.concatenate([first.labels, second.labels]),
        np.concatenate([first.features, second.features]),
        f"{first.source} and {second.source}",
        first.images + second.images,
    )
