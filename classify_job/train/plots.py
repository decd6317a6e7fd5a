"""The plots a training run and an evaluation leave behind: curves, confusion matrix, per-class bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classify_job import atomic

if TYPE_CHECKING:
    from classify_job.train.metrics import EvaluationReport


def plot_training_curves(history: Sequence[dict[str, float]], path: Path, best: int = 0) -> None:
    """Loss, accuracy and learning rate per epoch, training next to validation; ``best`` epoch marked."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key in zip(axes[:2], ("loss", "accuracy"), strict=True):
        for name in (key, f"val_{key}"):
            if history and name in history[0]:
                ax.plot(
                    epochs,
                    [row[name] for row in history],
                    "-o",
                    ms=3,
                    label=name.replace("val_", "validation "),
                )
        if best:
            ax.axvline(best, color="grey", linestyle=":", label=f"best epoch {best}")
        ax.set(xlabel="epoch", title=key)
        ax.legend()
    axes[2].plot(epochs, [row["learning_rate"] for row in history], "-", color="tab:green")
    axes[2].set(xlabel="epoch", title="learning rate (end of epoch)", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, path)


def plot_accuracy_against_time(
    history: Sequence[dict[str, float]], path: Path, test_accuracy: float | None = None, best: int = 0
) -> None:
    """Training and validation accuracy against the wall time the epochs took (minutes since the
    first started), and the test accuracy of the weights kept (those of epoch ``best``)."""
    plt = pyplot()
    minutes = np.cumsum([row["seconds"] for row in history]) / 60
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, label in (("accuracy", "training (augmented)"), ("val_accuracy", "validation")):
        if history and name in history[0]:
            ax.plot(minutes, [row[name] for row in history], "-o", ms=3, label=label)
    if test_accuracy is not None and history:
        at = minutes[best - 1] if 0 < best <= len(minutes) else minutes[-1]
        ax.plot([at], [test_accuracy], "*", ms=12, color="tab:red", label=f"test {test_accuracy:.2%}")
    ax.set(xlabel="minutes of training", ylabel="accuracy", title="Accuracy against wall time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def plot_confusion(report: EvaluationReport, path: Path) -> None:
    """Row-normalised confusion matrix; cells show the rate and, for <= 20 classes, the count."""
    plt = pyplot()
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
    save_figure(fig, path)


def plot_per_class(report: EvaluationReport, path: Path) -> None:
    """Grouped bars of precision, recall and F1 per class, with the macro F1 as a line."""
    plt = pyplot()
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
    save_figure(fig, path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Save ``fig`` as a PNG atomically and close it."""
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    pyplot().close(fig)


def plot_reliability(before: list[dict], after: list[dict], path: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after calibration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for bins, name, style in ((before, "raw", "o--"), (after, "calibrated", "o-")):
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, ms=4, label=name)
    ax.set(
        xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title="Reliability (test split)"
    )
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_trials(records: list[dict], budget_s: float, path: Path) -> None:
    """Each trial's validation loss at the time it started, by kind; the best so far; the budget."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    done = [r for r in records if r["status"] == "ok"]
    for kind, marker in (("head", "o"), ("features", "s"), ("fine-tune", "^")):
        mine = [r for r in done if r["kind"] == kind]
        if mine:
            ax.scatter([r["started_at_s"] / 60 for r in mine], [r["val_loss"] for r in mine],
                       marker=marker, label=f"{kind} ({len(mine)})")  # fmt: skip
    if done:
        ends = sorted((r["started_at_s"] + r["seconds"], r["val_loss"]) for r in done)
        best = np.minimum.accumulate([loss for _, loss in ends])
        ax.step([t / 60 for t, _ in ends], best, where="post", color="black", lw=1, label="best so far")
    skipped = sum(r["status"] == "over budget" for r in records)
    ax.axvline(budget_s / 60, color="grey", linestyle=":", label=f"budget ({skipped} trials over it)")
    ax.set(xlabel="minutes since the search started", ylabel="best validation loss",
           title="Tuning trials")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
