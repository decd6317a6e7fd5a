"""Evaluate a bundle on labelled images: accuracy, loss, per-class metrics, confusions, plots."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.bundle import BundleSpec
from classify_job.config import coerce_paths
from classify_job.errors import DatasetError, InputError
from classify_job.train.dataset import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    TEST_SPLIT,
    VAL_SPLIT,
    LabelledFile,
    LoadedSplit,
    index_dataset,
    list_samples,
    load_split,
)
from classify_job.train.metrics import EvaluationReport, report_from_probs
from classify_job.train.plots import plot_confusion, plot_per_class

EVAL_SPLITS = ("auto", "all", "train", "val", "test")
REPORT_FILES = (
    "metrics.json",
    "per_class.csv",
    "confusion_matrix.csv",
    "misclassified.csv",
    "confusion_matrix.png",
    "per_class.png",
)


@dataclasses.dataclass(frozen=True)
class EvaluateJob:
    """``classify-job evaluate``'s settings, from flags or an ``[evaluate]`` job-file table."""

    bundle: Path
    data: Path
    out: Path | None = None
    split: str = "auto"

    def __post_init__(self) -> None:
        coerce_paths(self)

    @classmethod
    def resolve(cls, job_file: Path | None = None, **flags: Any) -> EvaluateJob:
        from classify_job.config import resolve

        return resolve(cls, job_file, "evaluate", {"bundle": "BUNDLE", "data": "DATA"}, **flags)


def evaluate(
    bundle_dir: str | os.PathLike,
    data: str | os.PathLike | tuple[np.ndarray, np.ndarray],
    out_dir: str | os.PathLike | None = None,
    split: str = "auto",
    batch_size: int = 256,
    workers: int = 4,
) -> EvaluationReport:
    """Evaluate the bundle in ``bundle_dir`` on a labelled folder or on ``(images, labels)`` arrays.

    For a folder, ``split`` picks the images: ``all`` of them; ``train``/``val``/``test`` as training
    split them (``test/`` folder or the hash split with the bundle's recorded fractions); ``auto`` is
    ``test`` when ``data`` has a ``test/`` folder or is the folder the bundle was trained on, else
    ``all``. Writes the report files into ``out_dir`` when given.
    """
    from classify_job.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    spec = bundle.spec
    if isinstance(data, tuple):
        images, labels = data
        loaded = LoadedSplit(
            np.asarray(images), np.asarray(labels, dtype=np.int32), _array_names(len(labels))
        )
        split = "arrays"
    else:
        split = resolve_split(Path(data), split, spec)
        samples = labelled_files(Path(data), split, spec.labels, spec.extra)
        loaded = load_split(data, samples, spec.image_size, spec.color_mode, workers)
    report = evaluate_arrays(bundle.model, spec.labels, loaded, split, batch_size)
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def resolve_split(data: Path, split: str, spec: BundleSpec) -> str:
    """Turn ``auto`` into a concrete split name for folder ``data`` (see :func:`evaluate`)."""
    if split not in EVAL_SPLITS:
        raise InputError(f"split must be one of {EVAL_SPLITS}. Received: {split!r}")
    if split != "auto":
        return split
    return "test" if (data / "test").is_dir() or spec.trained_on(data) else "all"


def labelled_files(
    data: Path, split: str, labels: Sequence[str], extra: dict[str, Any]
) -> tuple[LabelledFile, ...]:
    """Samples of ``split`` under ``data``, labelled with the bundle's label indices."""
    extensions = _extensions(extra)
    if split == "all":
        folders = [data / name for name in SPLIT_NAMES if (data / name).is_dir()] or [data]
        return tuple(s for folder in folders for s in list_samples(data, folder, labels, extensions))
    if (data / split).is_dir():
        return list_samples(data, data / split, labels, extensions)
    training = extra.get("training", {})
    val_split = float(training.get("val_split", VAL_SPLIT))
    test_split = float(training.get("test_split", TEST_SPLIT))
    index = index_dataset(data, val_split, test_split, extensions)
    unknown = sorted(set(index.classes) - set(labels))
    if unknown:
        raise DatasetError(f"{data} has classes the model does not know: {unknown}")
    remap = [list(labels).index(name) for name in index.classes]
    return tuple(dataclasses.replace(s, label=remap[s.label]) for s in index.splits[split])


def _extensions(extra: dict[str, Any]) -> frozenset[str]:
    return frozenset(extra.get("training", {}).get("extensions", IMAGE_EXTENSIONS))


def _array_names(n: int) -> tuple[str, ...]:
    return tuple(f"#{i}" for i in range(n))


def predict_with_features(
    model: Any, images: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and penultimate features of uint8 ``images``, through the model's inference form."""
    from classify_job.nets.inference import FEATURES, PROBABILITIES, inference_model

    serving = inference_model(model)
    if len(images) == 0:
        return np.zeros((0, serving.output[PROBABILITIES].shape[-1])), np.zeros(
            (0, serving.output[FEATURES].shape[-1])
        )
    outputs = serving.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(outputs[PROBABILITIES], np.float64), np.asarray(outputs[FEATURES], np.float32)


def evaluate_arrays(
    model: Any, labels: Sequence[str], data: LoadedSplit, split: str = "arrays", batch_size: int = 256
) -> EvaluationReport:
    """Run ``model`` on decoded images and measure it against ``data.labels``."""
    if len(data) == 0:
        raise DatasetError(f"no images to evaluate in split {split!r}")
    if data.labels.min() < 0 or data.labels.max() >= len(labels):
        raise InputError(
            f"labels must be in [0, {len(labels)}). Received range: {data.labels.min()}..{data.labels.max()}"
        )
    probs, _ = predict_with_features(model, data.images, batch_size)  # as served: with its test-time flip
    return report_from_probs(labels, data.labels, probs, data.relpaths, split, data.bad_files)


def write_report(
    report: EvaluationReport, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None
) -> list[Path]:
    """Write metrics.json, per_class.csv, confusion_matrix.{csv,png}, per_class.png, misclassified.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_dir / "metrics.json", {**report.to_dict(), **(extra or {})})
    _write_csv(
        out_dir / "per_class.csv",
        ["label", "precision", "recall", "f1", "support"],
        [dataclasses.astuple(c) for c in report.per_class],
    )
    _write_csv(
        out_dir / "confusion_matrix.csv",
        ["true \\ predicted", *report.labels],
        [[label, *row] for label, row in zip(report.labels, report.confusion.tolist(), strict=True)],
    )
    _write_csv(
        out_dir / "misclassified.csv",
        ["relpath", "true", "predicted", "confidence", "p_true"],
        [dataclasses.astuple(m) for m in report.misclassified],
    )
    plot_confusion(report, out_dir / "confusion_matrix.png")
    plot_per_class(report, out_dir / "per_class.png")
    return [out_dir / name for name in REPORT_FILES]


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with atomic.atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
