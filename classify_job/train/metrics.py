"""Evaluation metrics from true labels and predicted probabilities: accuracy, loss, per-class
precision/recall/F1, the confusion matrix, the top confusions and the misclassified files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classify_job.train.dataset import BadFile

TOP_CONFUSIONS = 10


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


def report_from_probs(
    labels: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    relpaths: Sequence[str],
    split: str = "arrays",
    bad_files: Sequence[BadFile] = (),
) -> EvaluationReport:
    """Build the report from true labels and predicted probabilities (N, K)."""
    k = len(labels)
    y_pred = probs.argmax(axis=1)
    p_true = probs[np.arange(len(y_true)), y_true]
    confusion = confusion_matrix(y_true, y_pred, k)
    precision, recall, f1, support = per_class_scores(confusion)
    present = support > 0
    per_class = tuple(
        ClassMetrics(labels[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in range(k)
    )
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


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: rows are true classes, columns predicted ones."""
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 and support per class; 0 where a ratio has nothing to divide by."""
    true_pos = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return precision, recall, f1, support


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
