"""What do 100 reviewed images buy: chosen by the review queue, or at random?

Run: make bench-loop  (or .venv/bin/python benchmarks/bench_loop.py [--base-per-class 20] [--added 100])

Fashion-MNIST, all ten classes. A base model (ImageNet EfficientNet-Lite0 fine-tuned at 64 px) is
trained on a small labelled folder, then classifies an unlabelled pool of training images. Arm
"queue": ``review export --limit N`` takes the N rows the review queue puts first (lowest
confidence), a simulated reviewer moves each entry to its true class folder, and ``review import``
adds them to a copy of the labelled folder. Arm "random": N pool images drawn at random (several
seeds), added with their true labels. Each arm retrains with the base model's settings and seed;
all are scored on the same stratified sample of the official test split. One JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import DATA, fashion_subset, machine

import classify_job  # noqa: F401  sets the JAX backend before keras is imported
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.loop.review_export import export_review, read_manifest
from classify_job.loop.review_import import import_review
from classify_job.runtime import setup_logging
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.evaluate import evaluate
from classify_job.train.pipeline import train

ROOT = DATA / "loop"
UPRIGHT = AugmentConfig("horizontal", 0.0, 0.0, 0.1, 0.0, 0.0)


def folders(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The labelled base folder, the unlabelled pool (its folder names are only the simulated
    reviewer's answer key) and the test folder, all from Fashion-MNIST PNGs."""
    per_class = args.base_per_class + args.pool_per_class
    source = fashion_subset(DATA / f"fmnist-loop-{per_class}-{args.test_per_class}", per_class,
                            args.test_per_class, seed=3)  # fmt: skip
    base, pool, marker = ROOT / "base", ROOT / "pool", ROOT / ".complete"
    made_for = f"{args.base_per_class} {args.pool_per_class} {args.test_per_class}\n"
    if not marker.is_file() or marker.read_text() != made_for:  # other sizes: split again
        shutil.rmtree(ROOT, ignore_errors=True)
        for folder in sorted((source / "train").iterdir()):
            files = sorted(folder.iterdir())
            for i, file in enumerate(files):
                target = (base if i < args.base_per_class else pool) / folder.name / file.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)
        marker.write_text(made_for)
    return base, pool, source / "test"


def fit_and_score(name: str, data: Path, test: Path, args: argparse.Namespace) -> tuple[Path, float]:
    config = TrainConfig(
        data, ROOT / "models" / name, arch="efficientnet_lite0", image_size=args.image_size,
        epochs=args.epochs, val_split=0.15, test_split=0.0, augment=UPRIGHT, seed=0, overwrite=True,
    )  # fmt: skip
    bundle = train(config).bundle_dir
    return bundle, round(evaluate(bundle, test, None, "all").accuracy, 4)


def queue_arm(base: Path, pool_out: Path, test: Path, args: argparse.Namespace) -> dict:
    """The review queue's first N, corrected by a reviewer who knows every true class."""
    review, data = ROOT / "review-queue", ROOT / "data-queue"
    for folder in (review, data):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(base, data)
    export_review(pool_out, review, limit=args.added)
    moved = 0
    for row in read_manifest(review):
        truth = Path(row["source_path"]).parent.name
        if truth != row["predicted_label"]:
            entry = review / row["entry"]
            (review / truth).mkdir(exist_ok=True)
            entry.rename(review / truth / entry.name)
            moved += 1
    imported = import_review(review, data)
    _, accuracy = fit_and_score("queue", data, test, args)
    return {"accuracy": accuracy, "added": imported.counts.get("added", 0), "corrected_by_reviewer": moved}


def random_arm(base: Path, pool: Path, test: Path, seed: int, args: argparse.Namespace) -> float:
    data = ROOT / f"data-random-{seed}"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(base, data)
    files = sorted(pool.rglob("*.png"))
    for i in np.random.default_rng(seed).choice(len(files), args.added, replace=False):
        target = data / files[i].parent.name / f"pool-{files[i].name}"
        shutil.copy2(files[i], target)
    return fit_and_score(f"random-{seed}", data, test, args)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-per-class", type=int, default=20)
    parser.add_argument("--pool-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--added", type=int, default=100)
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    started = time.perf_counter()
    base, pool, test = folders(args)
    bundle, base_accuracy = fit_and_score("base", base, test, args)
    pool_out = ROOT / "pool-out"
    shutil.rmtree(pool_out, ignore_errors=True)
    run_classify(ClassifyConfig(pool, bundle, pool_out))
    queue = queue_arm(base, pool_out, test, args)
    randoms = [random_arm(base, pool, test, seed, args) for seed in range(args.random_seeds)]
    result = {
        "machine": machine(),
        "args": vars(args),
        "base_accuracy": base_accuracy,
        "queue": {**queue, "gain": round(queue["accuracy"] - base_accuracy, 4)},
        "random": {
            "accuracies": randoms,
            "mean": round(statistics.mean(randoms), 4),
            "sd": round(statistics.stdev(randoms), 4) if len(randoms) > 1 else None,
            "gain": round(statistics.mean(randoms) - base_accuracy, 4),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
