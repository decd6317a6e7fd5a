"""Fine-tuning ImageNet EfficientNet-Lite0: wall time and held-out accuracy on two datasets.

Run: .venv/bin/python benchmarks/bench_finetune.py [--variants sample,fashion] [--image-size 224]
Datasets: (a) the four-class procedural sample photos, 600 for training (10% of them validation)
and 200 rendered with another seed as the test set; (b) 10,000 Fashion-MNIST training images (1,000
per class, 28x28 upscaled) tested on a stratified 2,000 of the official test set.
Variants (see VARIANTS): phase 1 alone, with 2 augmented views cached, and with phase 2 on the top
2 blocks. Expected on 2 otherwise idle CPU cores at 224x224: sample ~0.5 min, sample_views2 ~1 min,
sample_finetune2 ~5 min, fashion ~6 min (nearly all of it the one backbone pass over every image),
plus a one-off ~1 min to render or export the data. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import classify_job  # noqa: F401  sets the JAX backend before keras is imported

# isort: split
from common import fashion_subset

from classify_job.runtime import setup_logging
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.fit import EpochInfo
from classify_job.train.pipeline import TrainResult, train

DONE = ".complete"
# name: (dataset, augmented views cached, top blocks fine-tuned in phase 2)
VARIANTS = {
    "sample": ("sample", 0, 0),
    "sample_views2": ("sample", 2, 0),
    "sample_finetune2": ("sample", 0, 2),
    "fashion": ("fashion", 0, 0),
    "fashion_finetune2": ("fashion", 0, 2),
}
DEFAULT_VARIANTS = "sample,sample_views2,sample_finetune2,fashion"
# Garments photographed upright and facing the camera: flips and small shifts only.
FASHION_AUGMENT = AugmentConfig("horizontal", 0.0, 0.0, 0.1, 0.0, 0.0)


def sample_dataset(root: Path, per_class: int, test_per_class: int) -> Path:
    """``train/`` from seed 0 and ``test/`` from seed 1 of the procedural sample photos (cached)."""
    from classify_job.sampledata.photos import write_sample_dataset

    marker = root / DONE
    wanted = f"{per_class} {test_per_class}"
    if not (marker.is_file() and marker.read_text() == wanted):
        write_sample_dataset(root / "train", per_class, seed=0, image_size=320)
        write_sample_dataset(root / "test", test_per_class, seed=1, image_size=320)
        marker.write_text(wanted)
    return root


def run(name: str, args: argparse.Namespace) -> dict:
    """Train variant ``name`` (its data's test/ folder is the held-out set); times and test metrics."""
    dataset, views, blocks = VARIANTS[name]
    if dataset == "sample":
        data, augment = sample_dataset(args.cache / "sample", 150, 50), AugmentConfig()
    else:
        data, augment = fashion_subset(args.cache / "fashion-mnist-10k", 1000, 200), FASHION_AUGMENT
    options = {
        "augmented_views": views,
        "fine_tune_blocks": blocks,
        "fine_tune_epochs": args.fine_tune_epochs,
    }
    config = TrainConfig(
        data,
        args.out / name,
        arch="efficientnet_lite0",
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        val_split=0.1,
        augment=augment,
        arch_options=options,
        overwrite=True,
    )
    started = time.perf_counter()
    result = train(config, on_epoch=lambda info: print_epoch(name, info))
    return summary(result, time.perf_counter() - started)


def summary(result: TrainResult, wall: float) -> dict:
    """Times per stage, held-out metrics and sizes from a finished run."""
    facts = result.spec.extra["pretrained"]
    seconds = {phase: sum(r["seconds"] for r in result.history if r["phase"] == phase) for phase in (1, 2)}
    report = result.report
    return {
        "test_accuracy": round(report.accuracy, 4),
        "test_macro_f1": round(report.macro_f1, 4),
        "test_loss": round(report.loss, 4),
        "test_images": report.num_images,
        "split_sizes": result.split_sizes,
        "feature_extraction_s": facts["feature_extraction_s"],
        "head_training_s": round(seconds[1], 1),
        "fine_tuning_s": round(seconds[2], 1),
        "train_wall_time_s": round(wall, 1),
        "epochs_by_phase": {p: sum(r["phase"] == p for r in result.history) for p in (1, 2)},
        "kept_phase": facts["kept_phase"],
        "best_epoch": result.best_epoch,
        "worst_class": report.worst_class,
        "model_id": result.spec.model_id,
    }


def print_epoch(name: str, info: EpochInfo) -> None:
    m = info.metrics
    print(
        f"[{name}] epoch {info.epoch}/{info.epochs} {info.seconds:.1f}s loss {m['loss']:.4f} "
        f"val_loss {m.get('val_loss', float('nan')):.4f} val_acc {m.get('val_accuracy', float('nan')):.4f}",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(".cache/bench-finetune"))
    parser.add_argument("--out", type=Path, default=Path("models/bench-finetune"))
    args = parser.parse_args()
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "cpu_count": os.cpu_count()}
    for name in args.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
        load_before = [round(v, 2) for v in os.getloadavg()]
        results[name] = {**run(name, args), "load_average_before": load_before}
        print(f"[{name}] {json.dumps(results[name])}", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
