"""Evaluate a bundle on labelled images: accuracy, loss, per-class metrics, confusions, plots."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.dataset import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    BadFile,
    LoadedSplit,
    Sample,
    index_dataset,
    list_samples,
    load_split,
)
from classify_job.errors import DatasetError, InputError

TOP_CONFUSIONS = 10
EVAL_SPLITS = ("auto", "all", "train", "val", "test")
REPORT_FILES = (
    "metrics.json",
    "per_class.csv",
    "confusion_matrix.csv",
    "misclassified.csv",
    "confusion_matrix.png",
    "per_class.png",
)


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class, and how many true images it has."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Confusion:
    """``count`` images of class ``true`` predicted as ``predicted`` (``rate`` of that class)."""

    true: str
    predicted: str
    count: int
    rate: float


@dataclass(frozen=True)
class Misclassified:
    """One wrong prediction, with the probability given to the predicted and the true class."""

    relpath: str
    true: str
    predicted: str
    confidence: float
    p_true: float


@dataclass(frozen=True)
class EvaluationReport:
    """Everything :func:`evaluate` measured; ``confusion`` rows are true classes, columns predictions."""

    labels: tuple[str, ...]
    num_images: int
    accuracy: float
    loss: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray
    top_confusions: tuple[Confusion, ...]
    misclassified: tuple[Misclassified, ...]
    split: str = "arrays"
    bad_files: tuple[BadFile, ...] = ()

    @property
    def confusion_normalized(self) -> np.ndarray:
        """Confusion matrix with each row divided by its class's support (rows sum to 1)."""
        rows = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, rows, out=np.zeros(self.confusion.shape), where=rows > 0)

    @property
    def best_class(self) -> str:
        """Label with the highest F1 among classes that have images."""
        return max((c for c in self.per_class if c.support), key=lambda c: c.f1).label

    @property
    def worst_class(self) -> str:
        """Label with the lowest F1 among classes that have images."""
        return min((c for c in self.per_class if c.support), key=lambda c: c.f1).label

    def summary(self) -> dict[str, Any]:
        """The headline numbers as a JSON-ready dict."""
        return {
            "split": self.split,
            "num_images": self.num_images,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "best_class": self.best_class,
            "worst_class": self.worst_class,
            "bad_files": len(self.bad_files),
        }

    def to_dict(self) -> dict[str, Any]:
        """Full JSON-ready report (misclassified files are in their own CSV, not here)."""
        return {
            **self.summary(),
            "labels": list(self.labels),
            "per_class": [dataclasses.asdict(c) for c in self.per_class],
            "top_confusions": [dataclasses.asdict(c) for c in self.top_confusions],
            "confusion_matrix": self.confusion.tolist(),
        }


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
        split = resolve_split(Path(data), split, spec.extra)
        samples = select_samples(Path(data), split, spec.labels, spec.extra)
        loaded = load_split(data, samples, spec.image_size, spec.color_mode, workers)
    report = evaluate_arrays(bundle.model, spec.labels, loaded, split, batch_size)
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def resolve_split(data: Path, split: str, extra: dict[str, Any]) -> str:
    """Turn ``auto`` into a concrete split name for folder ``data`` (see :func:`evaluate`)."""
    if split not in EVAL_SPLITS:
        raise InputError(f"split must be one of {EVAL_SPLITS}. Received: {split!r}")
    if split != "auto":
        return split
    trained_on = extra.get("training", {}).get("data_dir")
    same_folder = trained_on is not None and Path(trained_on).resolve() == data.resolve()
    return "test" if (data / "test").is_dir() or same_folder else "all"


def select_samples(
    data: Path, split: str, labels: Sequence[str], extra: dict[str, Any]
) -> tuple[Sample, ...]:
    """Samples of ``split`` under ``data``, labelled with the bundle's label indices."""
    extensions = _extensions(extra)
    if split == "all":
        folders = [data / name for name in SPLIT_NAMES if (data / name).is_dir()] or [data]
        return tuple(s for folder in folders for s in list_samples(data, folder, labels, extensions))
    if (data / split).is_dir():
        return list_samples(data, data / split, labels, extensions)
    training = extra.get("training", {})
    val_split, test_split = float(training.get("val_split", 0.1)), float(training.get("test_split", 0.1))
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
    probs = np.asarray(model.predict(data.images, batch_size=batch_size, verbose=0), dtype=np.float64)
    return report_from_probs(labels, data.labels, probs, data.relpaths, split, data.bad_files)


def report_from_probs(
    labels: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    relpaths: Sequence[str],
    split: str = "arrays",
    bad_files: Sequence[BadFile] = (),
) -> EvaluationReport:
    """Build the report from true labels and predicted probabilities (N, K)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = len(labels)
    y_pred = probs.argmax(axis=1)
    p_true = probs[np.arange(len(y_true)), y_true]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=range(k), zero_division=0
    )
    present = support > 0
    per_class = tuple(
        ClassMetrics(labels[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in range(k)
    )
    confusion = confusion_matrix(y_true, y_pred, labels=range(k))
    return EvaluationReport(
        labels=tuple(labels),
        num_images=len(y_true),
        accuracy=float(np.mean(y_pred == y_true)),
        loss=float(np.mean(-np.log(np.clip(p_true, 1e-7, 1.0)))),
        macro_precision=float(precision[present].mean()),
        macro_recall=float(recall[present].mean()),
        macro_f1=float(f1[present].mean()),
        per_class=per_class,
        confusion=confusion,
        top_confusions=top_confusions(confusion, labels),
        misclassified=misclassified(labels, y_true, y_pred, probs, relpaths),
        split=split,
        bad_files=tuple(bad_files),
    )


def top_confusions(
    confusion: np.ndarray, labels: Sequence[str], n: int = TOP_CONFUSIONS
) -> tuple[Confusion, ...]:
    """The ``n`` largest off-diagonal cells, largest first."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:n]
    rows = confusion.sum(axis=1)
    cells = [np.unravel_index(i, off.shape) for i in order]
    return tuple(
        Confusion(labels[t], labels[p], int(off[t, p]), float(off[t, p] / rows[t]))
        for t, p in cells
        if off[t, p] > 0
    )


def misclassified(
    labels: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, relpaths: Sequence[str]
) -> tuple[Misclassified, ...]:
    """Every wrong prediction, most confident first (the likeliest label errors lead)."""
    wrong = np.flatnonzero(y_true != y_pred)
    confidence = probs[wrong, y_pred[wrong]]
    rows = [
        Misclassified(relpaths[i], labels[y_true[i]], labels[y_pred[i]], float(c), float(probs[i, y_true[i]]))
        for i, c in zip(wrong, confidence, strict=True)
    ]
    return tuple(sorted(rows, key=lambda m: -m.confidence))


def write_report(
    report: EvaluationReport, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None
) -> list[Path]:
    """Write metrics.json, per_class.csv, confusion_matrix.{csv,png}, per_class.png, misclassified.csv."""
    from classify_job.bundle import write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "metrics.json", {**report.to_dict(), **(extra or {})})
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
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def plot_confusion(report: EvaluationReport, path: Path) -> None:
    """Row-normalised confusion matrix; cells show the rate and, for <= 20 classes, the count."""
    plt = _pyplot()
    k = len(report.labels)
    side = min(4 + 0.6 * k, 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    norm = report.confusion_normalized
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    title = f"Confusion ({report.split}, n={report.num_images}, accuracy {report.accuracy:.2%})"
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(report.labels, rotation=45, ha="right")
    ax.set_yticklabels(report.labels)
    if k <= 20:
        for (t, p), count in np.ndenumerate(report.confusion):
            if count == 0:
                continue
            color = "white" if norm[t, p] > 0.5 else "black"
            ax.text(p, t, f"{norm[t, p]:.0%}\n{count}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    _save(fig, path)


def plot_per_class(report: EvaluationReport, path: Path) -> None:
    """Grouped bars of precision, recall and F1 per class, with the macro F1 as a line."""
    plt = _pyplot()
    k = len(report.labels)
    fig, ax = plt.subplots(figsize=(max(7.5, 0.7 * k + 3.5), 4.5))
    x = np.arange(k)
    for offset, name in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1"), strict=True):
        ax.bar(x + offset, [getattr(c, name) for c in report.per_class], width=0.27, label=name)
    ax.axhline(
        report.macro_f1, color="black", linestyle="--", linewidth=1, label=f"macro F1 {report.macro_f1:.3f}"
    )
    ax.set(xticks=x, ylim=(0, 1.05), ylabel="score", title=f"Per-class metrics ({report.split})")
    ax.set_xticklabels(report.labels, rotation=45, ha="right")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    os.replace(tmp, path)
