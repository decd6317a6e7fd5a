"""What a training run leaves in its bundle: files, plots and the model card.

:func:`write_outputs` saves the model and returns the spec of its ``bundle.json`` (see
:mod:`classify_job.bundle`), which later stages complete and training writes last; it also writes
the test evaluation, ``history.csv``, ``bad_files.csv`` and ``training_curves.png``.
:func:`write_model_card` writes the README.md model card once the decision rule is fitted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.bundle import BundleSpec, save_model
from classify_job.decisions.card import decision_lines
from classify_job.hashing import SPLIT_HASH, content_hash, content_prefixes
from classify_job.runtime import xla_settings
from classify_job.train.dataset import BadFile, TrainingData
from classify_job.train.evaluate import write_report
from classify_job.train.fit import best_epoch, monitor_metric
from classify_job.train.metrics import EvaluationReport
from classify_job.train.plots import plot_accuracy_against_time, plot_training_curves
from classify_job.train.state import Trained
from classify_job.versions import library_versions
from classify_job.walk import fs_path

TRAINING_HASHES = "training_hashes.npy"


def write_outputs(directory: Path, trained: Trained, wall_time_s: float) -> BundleSpec:
    """Write ``model.keras`` and the reports, history and curves into ``directory``; returns the
    spec of ``bundle.json`` (not written: later stages add to it).

    The recipe's facts (e.g. pretrained weights' source) join bundle.json's extra.
    """
    from classify_job.nets.inference import served_flip

    config, data, net, report = trained.run.config, trained.run.data, trained.net, trained.report
    history, weights = trained.fitted.history, trained.run.weights
    monitor = monitor_metric(data)
    training = {
        "config": config.to_dict(),  # out_dir is the bundle's folder, not the staging one inside it
        "data_fingerprint": data.index.fingerprint(),
        "layout": data.index.layout,
        "parameters": int(net.count_params()),
        "split_sizes": data.split_sizes(),
        "class_weights": {data.index.classes[k]: w for k, w in weights.items()} if weights else None,
        "bad_files": len(data.bad_files),
        "epochs_run": len(history),
        "best_epoch": best_epoch(history, monitor),
        "wall_time_s": round(wall_time_s, 1),
        "evaluated_on": report.split,
        "split_hash": SPLIT_HASH,
    }
    spec = BundleSpec(
        labels=data.index.classes,
        image_size=config.image_size,
        color_mode=config.color_mode,
        architecture=config.arch,
        extra={
            # evaluate.py reads data_dir, val_split, test_split and extensions from here.
            "training": {**training["config"], "data_dir": str(config.data_dir.resolve())},
            "run": {k: v for k, v in training.items() if k != "config"},
            "metrics": report.summary(),
            "versions": library_versions(),
            "xla": xla_settings(),  # the CPU kernels XLA trained with
            "tta": {"flip": served_flip(net)},  # what the served graph averages over, every architecture
            "training_hashes": write_training_hashes(directory, data),
            **trained.fitted.facts,
        },
    )
    spec = save_model(directory, net, spec)
    write_report(report, directory, extra={"model_id": spec.model_id, "training": training})
    write_bad_files(data.bad_files, directory / "bad_files.csv")
    write_history(history, directory / "history.csv")
    plot_training_curves(history, directory / "training_curves.png", training["best_epoch"])
    plot_accuracy_against_time(
        history, directory / "accuracy_vs_time.png", report.accuracy, training["best_epoch"]
    )
    return spec


def write_training_hashes(directory: Path, data: TrainingData) -> dict[str, Any]:
    """``training_hashes.npy``: content prefixes of every train and val image (the images the model
    fitted or was selected on), so a promotion gate can refuse a holdout that shares them."""
    root, samples = data.index.root, data.index.splits["train"] + data.index.splits["val"]
    digests = []
    for s in samples:
        with suppress(OSError):  # gone since it was decoded: it cannot be in a later holdout either
            digests.append(content_hash(fs_path(root, s.relpath, s.relpath_bytes)))
    prefixes = content_prefixes(digests)
    with atomic.atomic_path(directory / TRAINING_HASHES) as tmp, tmp.open("wb") as fh:
        np.save(fh, prefixes)
    return {
        "file": TRAINING_HASHES,
        "hash": "sha256 uint64 prefix",
        "splits": ["train", "val"],
        "images": len(digests),
    }


def write_history(history: Sequence[dict[str, float]], path: Path) -> None:
    """One CSV row per epoch: epoch, seconds, learning rate and every Keras metric."""
    import pandas as pd

    with atomic.atomic_path(path) as tmp:
        pd.DataFrame(list(history)).to_csv(tmp, index=False)


def write_bad_files(bad_files: Sequence[BadFile], path: Path) -> None:
    """The files that were skipped, one row each with the reason (header only when there are none)."""
    import pandas as pd

    frame = pd.DataFrame([dataclasses.asdict(b) for b in bad_files], columns=["relpath", "reason"])
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_model_card(spec: BundleSpec, report: EvaluationReport, path: Path) -> None:
    """A README.md a person can read: what the model is, what it was trained on, how well it does,
    and what its decisions promise."""
    config, training, pre = spec.extra["training"], spec.extra["run"], spec.preprocessing
    size = f"{spec.image_size[0]}x{spec.image_size[1]} {spec.color_mode}"
    lines = [
        f"# Model card: {spec.model_id}",
        "",
        f"An image classifier ({spec.architecture}) "
        f"{'fine-tuned from ImageNet weights' if 'pretrained' in spec.extra else 'trained from scratch'}"
        " by `classify_job.train`.",
        f"It always answers with one of its {len(spec.labels)} labels, even for images of something else.",
        "",
        "## Input",
        f"- Labels: {', '.join(spec.labels)}",
        f"- Image: {size}, decoded by `{pre['function']}` ({pre['resize']}, EXIF orientation,",
        "  alpha on white); float32 pixels 0..255, normalisation inside the model.",
        "",
        "## Data",
        f"- Folder: `{config['data_dir']}` (layout {training['layout']})",
        f"- Fingerprint `{training['data_fingerprint']}` (hash of relative paths and sizes)",
        f"- Split sizes: {training['split_sizes']}",
        f"- Unreadable files skipped: {training['bad_files']} (listed in bad_files.csv)",
        f"- Class weights: {training['class_weights'] or 'none (classes balanced enough)'}",
        "",
        "## Training",
        f"- {training['epochs_run']} of {config['epochs']} epochs (best {training['best_epoch']}), "
        f"batch {config['batch_size']}, seed {config['seed']}, {training['wall_time_s']:.0f} s",
        f"- {training['parameters']:,} parameters; AdamW, learning rate {config['learning_rate']} "
        f"({config['lr_schedule']}), "
        f"weight decay {config['weight_decay']}",
        f"- Augmentation: {describe_augmentation(config['augment'])}",
        "",
        f"## Results on the {report.split} split ({report.num_images} images)",
        f"- Accuracy {report.accuracy:.4f}, macro F1 {report.macro_f1:.4f}, cross-entropy {report.loss:.4f}",
        f"- Best class: {report.best_class}; worst class: {report.worst_class}",
        "",
        "| class | precision | recall | F1 | images |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {c.label} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} |"
            for c in report.per_class
        ),
        "",
        "Most frequent confusions:",
        *(f"- {c.true} -> {c.predicted}: {c.count} ({c.rate:.1%})" for c in report.top_confusions[:5]),
        "",
        "Files: metrics.json, per_class.csv, confusion_matrix.csv/png, misclassified.csv (most confident",
        "mistakes first: check them for label errors), history.csv, training_curves.png,",
        "accuracy_vs_time.png, bad_files.csv, calibration.png (reliability before and after calibration).",
        "",
        *decision_lines(spec),
    ]
    atomic.write_text(path, "\n".join(lines) + "\n")


def describe_augmentation(augment: dict[str, Any]) -> str:
    """``flip horizontal, translate 0.071`` from the recorded settings; ``none`` when all are off."""
    active = [
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in augment.items()
        if v not in (0, "none")
    ]
    return ", ".join(active) or "none"
