"""Fashion-MNIST through the ordinary folder-dataset training path; test accuracy on the official 10k.

Run: make bench-fashion-mnist  (or .venv/bin/python benchmarks/bench_fashion_mnist.py [--epochs N])
The recipe is jobs/fashion-mnist-cnn.toml: what `classify-job train --config` reads (`--job F` runs
a variant). Expected: a one-off export of 70,000 PNGs (~10 s), decoding them (~28 s), then ~65 s per
epoch on 2 CPU cores; prints one JSON object (test accuracy, wall time, seconds per epoch, the
accuracy-against-time curve, the processor). Measured on an AMD EPYC: 93.79%, 93.93%, 93.98% and
94.01% in four runs of 22-24 epochs (the 28-minute budget's plan, 60-76 s each) in 26.6-28.5
minutes; 93.09% after 16 epochs of 90.9 s before the pooling and malloc changes, and 92.91% after 13
fixed epochs in 32.5 minutes before the kernel change.
The data comes from the Debian package ``dataset-fashion-mnist``; as root the script installs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import classify_job  # noqa: F401  sets the JAX backend before keras is imported

# isort: split
from common import machine

from classify_job.errors import ClassifyJobError
from classify_job.runtime import setup_logging
from classify_job.sampledata import fashion_mnist
from classify_job.train.config import TrainConfig
from classify_job.train.fit import EpochInfo
from classify_job.train.pipeline import train

JOB_FILE = Path(__file__).resolve().parents[1] / "jobs" / "fashion-mnist-cnn.toml"
TARGET_ACCURACY = 0.94  # issue 15: >= 94.0% in <= 30 minutes; the floor is 93.5%
FLOOR_ACCURACY = 0.935
BUDGET_S = 30 * 60


def ensure_dataset(source: Path) -> None:
    """Install the Debian package when its files are missing and we may; otherwise explain and exit."""
    if (source / "train-images-idx3-ubyte.gz").is_file():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        logging.info("installing %s with apt-get", fashion_mnist.APT_PACKAGE)
        subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", fashion_mnist.APT_PACKAGE], check=False)
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        sys.exit(
            f"Fashion-MNIST not found under {source}. Install it with:\n"
            f"  sudo apt-get update && sudo apt-get install -y {fashion_mnist.APT_PACKAGE}"
        )


def benchmark_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe of ``--job`` (by default jobs/fashion-mnist-cnn.toml, what ``train --config``
    reads), with the flags given.

    Early stopping stays off (patience = epochs) because the cosine schedule is sized to the epoch
    budget; the best epoch by validation loss is still the one kept.
    """
    flags = {
        "data_dir": args.data_dir, "out_dir": args.out, "epochs": args.epochs,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate, "seed": args.seed,
    }  # fmt: skip
    config = TrainConfig.resolve(args.job, **flags)
    return config.with_overrides(patience=config.epochs)


def print_epoch(info: EpochInfo) -> None:
    m = info.metrics
    print(
        f"epoch {info.epoch}/{info.epochs} {info.seconds:.0f}s loss {m['loss']:.4f} acc {m['accuracy']:.4f} "
        f"val_loss {m.get('val_loss', float('nan')):.4f} val_acc {m.get('val_accuracy', float('nan')):.4f} "
        f"lr {m['learning_rate']:.2e}",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=JOB_FILE, help="the recipe (a train job file)")
    parser.add_argument("--epochs", type=int, help="a cap (job file: 40, with a 28-minute budget)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--source", type=Path, default=fashion_mnist.DEFAULT_DIR)
    parser.add_argument("--data-dir", type=Path, default=Path(".cache/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("models/fashion-mnist-cnn"))
    args = parser.parse_args()
    setup_logging()
    started = time.perf_counter()
    ensure_dataset(args.source)
    fashion_mnist.export_folders(args.data_dir, args.source)
    exported = time.perf_counter()
    try:
        result = train(benchmark_config(args), on_epoch=print_epoch)
    except ClassifyJobError as exc:
        sys.exit(f"error: {exc}")
    report = result.report
    minutes = 0.0
    curve = []
    for row in result.history:
        minutes += row["seconds"] / 60
        curve.append(
            {
                "epoch": row["epoch"],
                "minutes": round(minutes, 2),
                "val_accuracy": round(row["val_accuracy"], 4),
            }
        )
    print(
        json.dumps(
            {
                "test_accuracy": round(report.accuracy, 4),
                "test_macro_f1": round(report.macro_f1, 4),
                "test_loss": round(report.loss, 4),
                "test_images": report.num_images,
                "target_met": report.accuracy >= TARGET_ACCURACY and result.wall_time_s <= BUDGET_S,
                "floor_met": report.accuracy >= FLOOR_ACCURACY and result.wall_time_s <= BUDGET_S,
                "epochs_run": len(result.history),
                "best_epoch": result.best_epoch,
                "seconds_per_epoch": round(result.seconds_per_epoch, 1),
                "train_wall_time_s": round(result.wall_time_s, 1),
                "export_time_s": round(exported - started, 1),
                "total_wall_time_s": round(time.perf_counter() - started, 1),
                "split_sizes": result.split_sizes,
                "worst_class": report.worst_class,
                "accuracy_against_time": curve,
                "machine": machine(),
                "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),  # make sets malloc on huge pages
                "job": str(args.job),
                "arch_options": result.spec.extra.get("training", {}).get("arch_options"),
                "model_id": result.spec.model_id,
                "bundle": str(result.bundle_dir),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
