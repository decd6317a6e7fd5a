"""What a training run leaves in its bundle: files, plots and the model card.

:func:`write_outputs` saves the model with its ``bundle.json`` (see :mod:`classify_job.bundle`), the test
evaluation, ``history.csv``, ``bad_files.csv``, ``training_curves.png`` and a README.md model card.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classify_job.bundle import BundleSpec, save_bundle
from classify_job.dataset import BadFile
from classify_job.evaluate import EvaluationReport

if TYPE_CHECKING:
    from classify_job.train import TrainConfig, TrainingData


def best_epoch(history: Sequence[dict[str, float]], monitor: str) -> int:
    """1-based epoch with the lowest ``monitor`` (the one EarlyStopping restored)."""
    values = [row.get(monitor, math.inf) for row in history]
    return int(history[int(np.argmin(values))]["epoch"]) if history else 0


def write_outputs(
    net: Any,
    config: TrainConfig,
    data: TrainingData,
    weights: dict[int, float] | None,
    history: Sequence[dict[str, float]],
    report: EvaluationReport,
    wall_time_s: float,
    facts: dict[str, Any] | None = None,
) -> BundleSpec:
    """Write the bundle (model.keras, bundle.json) and its reports, history, curves and model card.

    ``facts`` from an architecture's own recipe (e.g. pretrained weights' source) join bundle.json's extra.
    """
    from classify_job.evaluate import write_report

    monitor = "val_loss" if len(data.val) else "loss"
    training = {
        "config": config.to_dict(),
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
            **(facts or {}),
        },
    )
    spec = save_bundle(config.out_dir, net, spec)
    write_report(report, config.out_dir, extra={"model_id": spec.model_id, "training": training})
    write_bad_files(data.bad_files, config.out_dir / "bad_files.csv")
    write_history(history, config.out_dir / "history.csv")
    plot_training_curves(history, config.out_dir / "training_curves.png", training["best_epoch"])
    write_model_card(spec, report, training, config.out_dir / "README.md")
    return spec


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the model's numbers."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("classify-job", "keras", "jax", "jaxlib", "numpy", "pillow", "scikit-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def write_history(history: Sequence[dict[str, float]], path: Path) -> None:
    """One CSV row per epoch: epoch, seconds, learning rate and every Keras metric."""
    import pandas as pd

    pd.DataFrame(list(history)).to_csv(path, index=False)


def write_bad_files(bad_files: Sequence[BadFile], path: Path) -> None:
    """The files that were skipped, one row each with the reason (header only when there are none)."""
    import pandas as pd

    pd.DataFrame([dataclasses.asdict(b) for b in bad_files], columns=["relpath", "reason"]).to_csv(
        path, index=False
    )


def plot_training_curves(history: Sequence[dict[str, float]], path: Path, best: int = 0) -> None:
    """Loss, accuracy and learning rate per epoch, training next to validation; ``best`` epoch marked."""
    from matplotlib.ticker import MaxNLocator

    from classify_job.evaluate import _pyplot, _save

    plt = _pyplot()
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
    _save(fig, path)


def write_model_card(
    spec: BundleSpec, report: EvaluationReport, training: dict[str, Any], path: Path
) -> None:
    """A README.md a person can read: what the model is, what it was trained on, how well it does."""
    config, pre = training["config"], spec.preprocessing
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
        "mistakes first: check them for label errors), history.csv, training_curves.png, bad_files.csv.",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def describe_augmentation(augment: dict[str, Any]) -> str:
    """``flip horizontal, translate 0.071`` from the recorded settings; ``none`` when all are off."""
    active = [
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in augment.items()
        if v not in (0, "none")
    ]
    return ", ".join(active) or "none"
