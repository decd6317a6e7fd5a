"""Do accepted labels meet the stated precision, and are unfamiliar images kept out?

Run: make bench-calibration  (or .venv/bin/python benchmarks/bench_calibration.py [--variants fashion,sample])

fashion: fine-tune ImageNet EfficientNet-Lite0 on a few hundred Fashion-MNIST training images of
each of the four most confusable classes (t-shirt/top, pullover, coat, shirt); classify every
official test image of those classes (familiar), plus every test image of sandal, sneaker, bag and
ankle boot (unfamiliar), through ``classify-job classify``. sample: the same with the four
procedural trouser/jeans classes, held-out photos from another seed, and skirts, shirts and shoes
from ``sample-data --other`` as the unfamiliar images.

Reported from the Parquet rows alone: ECE before and after calibration (familiar images); per
class, the precision of accepted labels (with its 95% Clopper-Pearson interval) and the share
accepted, at the target precision; the share of unfamiliar images accepted, overall and per kind,
under the calibrated rule and under the old fixed rule (confidence >= 0.6 and margin >= 0.15);
AUROC of the unfamiliar score, and of the raw confidence for comparison. One JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import DATA, classify, fashion_subset, machine

import classify_job  # noqa: F401  sets the JAX backend before keras is imported
from classify_job.decisions.calibration import calibration_figures
from classify_job.decisions.rule import DEFAULT_MARGIN, DEFAULT_THRESHOLD
from classify_job.runtime import setup_logging
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.pipeline import train

FAMILIAR = ("t-shirt_top", "pullover", "coat", "shirt")
UNFAMILIAR = ("sandal", "sneaker", "bag", "ankle_boot")
UPRIGHT = AugmentConfig("horizontal", 0.0, 0.0, 0.1, 0.0, 0.0)  # garments photographed upright


def fashion_data(args: argparse.Namespace) -> tuple[Path, Path]:
    """Training folder (the familiar classes), and a tree of familiar/ and unfamiliar/ test images."""
    train_root = fashion_subset(DATA / f"fmnist-cal-{args.per_class}", args.per_class, 0, classes=FAMILIAR)
    test_root = fashion_subset(DATA / "fmnist-cal-test", 0, None, classes=FAMILIAR + UNFAMILIAR)
    tree = DATA / "fmnist-cal-tree"
    if not (tree / ".complete").is_file():
        for name in FAMILIAR + UNFAMILIAR:
            group = "familiar" if name in FAMILIAR else "unfamiliar"
            shutil.copytree(test_root / "test" / name, tree / group / name, dirs_exist_ok=True)
        (tree / ".complete").write_text("ok\n")
    return train_root / "train", tree


def sample_data(args: argparse.Namespace) -> tuple[Path, Path]:
    """Sample photos (seed 0) to train on; held-out photos (seed 1) and other garments to classify."""
    from classify_job.sampledata.photos import write_sample_dataset

    root = DATA / f"sample-cal-{args.per_class}"
    if not (root / ".complete").is_file():
        write_sample_dataset(root / "train", args.per_class, seed=0)
        write_sample_dataset(
            root / "tree" / "familiar", 100, seed=1, other=100, other_dir=root / "tree" / "unfamiliar"
        )
        (root / ".complete").write_text("ok\n")
    return root / "train", root / "tree"


def fit(name: str, data: Path, args: argparse.Namespace) -> tuple[Path, float]:
    augment = UPRIGHT if name == "fashion" else AugmentConfig()
    config = TrainConfig(
        data,
        DATA / f"cal-model-{name}",
        arch="efficientnet_lite0",
        image_size=args.image_size,
        epochs=args.epochs,
        val_split=0.1,
        test_split=0.1,
        augment=augment,
        target_precision=args.target,
        overwrite=True,
    )
    started = time.perf_counter()
    result = train(config)
    return result.bundle_dir, time.perf_counter() - started


def measure(rows: pd.DataFrame, labels: tuple[str, ...], target: float) -> dict:
    """Every figure from the Parquet rows: ``group`` (familiar/unfamiliar) and ``truth`` come from
    each relpath (``familiar/<class>/...``)."""
    parts = rows.relpath.str.split("/")
    rows = rows.assign(group=parts.str[0], truth=parts.str[1])
    familiar, unfamiliar = rows[rows.group == "familiar"], rows[rows.group == "unfamiliar"]
    truth = familiar.truth.map({label: i for i, label in enumerate(labels)}).to_numpy()
    calibrated = np.stack(familiar[[f"prob_{label}" for label in labels]].to_numpy())
    raw = np.stack(familiar.raw_probs.to_numpy())
    return {
        "familiar_images": len(familiar),
        "unfamiliar_images": len(unfamiliar),
        "accuracy": round(float((raw.argmax(1) == truth).mean()), 4),
        "ece_before": calibration_figures(raw, truth)["ece"],
        "ece_after": calibration_figures(calibrated, truth)["ece"],
        "nll_before": calibration_figures(raw, truth)["nll"],
        "nll_after": calibration_figures(calibrated, truth)["nll"],
        "target_precision": target,
        "per_class": {label: _accepted(familiar, label) for label in labels},
        "familiar_accepted_share": _share(familiar.decision == "accept"),
        "familiar_precision_of_accepted": _precision(familiar[familiar.decision == "accept"]),
        "unfamiliar_accepted_share": _share(unfamiliar.decision == "accept"),
        "unfamiliar_accepted_share_old_rule": _share(_old_rule(unfamiliar)),
        "familiar_accepted_share_old_rule": _share(_old_rule(familiar)),
        "unfamiliar_accepted_by_kind": {
            kind: _share(group.decision == "accept") for kind, group in unfamiliar.groupby("truth")
        },
        "review_reasons": rows.review_reason.str.split("; ").explode().value_counts().to_dict(),
        "auroc_unfamiliar_score": _auroc(unfamiliar.unfamiliar_score, familiar.unfamiliar_score),
        "auroc_raw_confidence": _auroc(-unfamiliar.raw_confidence, -familiar.raw_confidence),
    }


def _accepted(familiar: pd.DataFrame, label: str) -> dict:
    accepted = familiar[(familiar.decision == "accept") & (familiar.label == label)]
    predicted = familiar[familiar.label == label]
    correct = int((accepted.truth == label).sum())
    return {
        "predicted": len(predicted),
        "accepted": len(accepted),
        "share_accepted": _share(pd.Series(predicted.decision == "accept")),
        "precision": round(correct / len(accepted), 4) if len(accepted) else None,
        "precision_95ci": _interval(correct, len(accepted)),
    }


def _precision(accepted: pd.DataFrame) -> float | None:
    return round(float((accepted.label == accepted.truth).mean()), 4) if len(accepted) else None


def _old_rule(rows: pd.DataFrame) -> pd.Series:
    """Accepted under the fixed rule every bundle had before calibration, on the raw values."""
    raw = np.stack(rows.raw_probs.to_numpy()) if len(rows) else np.zeros((0, 2))
    top2 = np.sort(raw, axis=1)[:, -2:]
    return pd.Series((top2[:, 1] >= DEFAULT_THRESHOLD) & (top2[:, 1] - top2[:, 0] >= DEFAULT_MARGIN))


def _share(mask: pd.Series) -> float:
    return round(float(np.mean(mask)), 4) if len(mask) else 0.0


def _interval(correct: int, n: int) -> list[float] | None:
    """Two-sided 95% Clopper-Pearson interval for a proportion."""
    from scipy.stats import beta

    if n == 0:
        return None
    low = beta.ppf(0.025, correct, n - correct + 1) if correct else 0.0
    high = beta.ppf(0.975, correct + 1, n - correct) if correct < n else 1.0
    return [round(float(low), 4), round(float(high), 4)]


def _auroc(positive: pd.Series, negative: pd.Series) -> float:
    """Probability that a random unfamiliar image scores above a random familiar one (ties half)."""
    scores = np.concatenate([positive.to_numpy(float), negative.to_numpy(float)])
    ranks = pd.Series(scores).rank().to_numpy()
    n_pos, n_neg = len(positive), len(negative)
    return round(float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)), 4)


def run(name: str, args: argparse.Namespace) -> dict:
    data, tree = (fashion_data if name == "fashion" else sample_data)(args)
    bundle, train_s = fit(name, data, args)
    spec = json.loads((bundle / "bundle.json").read_text())
    out = DATA / f"cal-out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    run_facts = classify(tree, bundle, out)
    rows = pd.read_parquet(out / "predictions")
    return {
        "train_s": round(train_s, 1),
        "classify_s": run_facts["wall_s"],
        "calibration": {k: spec["calibration"][k] for k in ("temperature", "fitted_on", "images")},
        "thresholds": {
            label: {k: t.get(k) for k in ("threshold", "accepted", "correct", "lower_bound")}
            for label, t in spec["accept_thresholds"].items()
        },
        "unfamiliar_cutoff": spec["unfamiliar"]["cutoff"],
        **measure(rows, tuple(spec["labels"]), args.target),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="fashion,sample", help="comma-separated: fashion, sample")
    parser.add_argument("--per-class", type=int, default=400, help="training images per class")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    results = {"machine": machine(), "args": vars(args)}
    for name in args.variants.split(","):
        if name not in ("fashion", "sample"):
            sys.exit(f"unknown variant {name!r}; choose from fashion, sample")
        results[name] = run(name, args)
        print(f"[{name}] {json.dumps(results[name])}", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
