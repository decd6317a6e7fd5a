"""The zero-argument path (``make classify`` with no DIR, ``classify-job demo``): sample photos, a
sample model, a classified sample tree and its report, each step timed and cached.

The sample model is trained on one seed of the generator and the tree to classify is drawn from
another, plus awkward files (corrupt, unicode, 16-bit, ...), so its accuracy is held out and its
error rows show the job's error handling.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classify_job import atomic
from classify_job.bundle import SPEC_FILE
from classify_job.errors import WeightsError

MARKER = ".complete.json"


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo keeps its files, and how big it is."""

    data_dir: Path = Path("data/sample/train")
    tree_dir: Path = Path("data/sample/tree")
    model_dir: Path = Path("models/sample")
    out_dir: Path = Path("out/sample")
    per_class: int = 150
    tree_per_class: int = 40
    fresh: bool = False


@dataclass
class DemoResult:
    """Timed steps, the classify summary and the sample model's held-out accuracy."""

    steps: list[tuple[str, float, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    test_accuracy: float | None = None
    tree_accuracy: float | None = None
    architecture: str = ""


StepCallback = Callable[[str, float, str], None]


def run_demo(config: DemoConfig, on_step: StepCallback = lambda *_: None) -> DemoResult:
    """Generate (once) the sample data, train (once) the sample model, classify the sample tree."""
    result = DemoResult()

    def step(name: str, work: Callable[[], str]) -> None:
        started = time.perf_counter()
        detail = work()
        result.steps.append((name, time.perf_counter() - started, detail))
        on_step(*result.steps[-1])

    if config.fresh:
        _remove(config.data_dir, config.tree_dir, config.model_dir, config.out_dir)
    step("sample photos", lambda: _ensure_sample(config.data_dir, config.per_class, seed=0, messy=False))
    step("sample tree", lambda: _ensure_sample(config.tree_dir, config.tree_per_class, seed=1, messy=True))
    step("sample model", lambda: _ensure_model(config))
    step("classify", lambda: _classify(config, result))
    _read_model_facts(config.model_dir, result)
    return result


def _remove(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _ensure_sample(directory: Path, per_class: int, seed: int, messy: bool) -> str:
    from classify_job.sampledata.photos import write_messy_tree, write_sample_dataset

    wanted = {"per_class": per_class, "seed": seed, "messy": messy}
    marker = directory / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return f"cached in {directory}"
    shutil.rmtree(directory, ignore_errors=True)
    summary = write_sample_dataset(directory, per_class, seed)
    extra = write_messy_tree(directory / "incoming", seed) if messy else ()
    atomic.write_json(marker, wanted)  # written last: a half-generated folder is redone
    return f"{len(summary.images) + len(extra)} files in {directory}"


def _ensure_model(config: DemoConfig) -> str:
    if (config.model_dir / SPEC_FILE).is_file():
        return f"cached in {config.model_dir}"
    from classify_job.train.config import TrainConfig
    from classify_job.train.pipeline import train

    arch = preferred_architecture()
    settings = {
        "efficientnet_lite0": {"epochs": 30, "batch_size": 32},
        "cnn": {"epochs": 25, "image_size": 96},
    }
    trained = train(
        TrainConfig(config.data_dir, config.model_dir, arch=arch, overwrite=True, **settings[arch])
    )
    return f"{arch} in {config.model_dir}, test accuracy {trained.report.accuracy:.1%}"


def preferred_architecture() -> str:
    """Fine-tuned EfficientNet-Lite0 when its pretrained weights can be imported, else the CNN."""
    from classify_job.nets.pretrained import import_pretrained

    try:
        import_pretrained()
    except WeightsError:
        return "cnn"
    return "efficientnet_lite0"


def _classify(config: DemoConfig, result: DemoResult) -> str:
    from classify_job.classify.config import ClassifyConfig
    from classify_job.classify.pipeline import run_classify

    run = run_classify(ClassifyConfig(config.tree_dir, config.model_dir, config.out_dir))
    result.summary = run.summary
    result.tree_accuracy = tree_accuracy(config.out_dir)
    return f"{run.progress.classified} classified, {run.progress.skipped} already done"


def tree_accuracy(out: Path) -> float | None:
    """Accuracy on the rows whose top folder names their true class (the clean sample photos)."""
    import pandas as pd

    from classify_job.sampledata.photos import CLASSES

    df = pd.read_parquet(out / "predictions", columns=["relpath", "status", "label"])
    truth = df.relpath.str.split("/").str[0]
    labelled = df[(df.status == "ok") & truth.isin(CLASSES)]
    return float((labelled.label == truth[labelled.index]).mean()) if len(labelled) else None


def _read_model_facts(model_dir: Path, result: DemoResult) -> None:
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    result.architecture = spec["architecture"]
    metrics = model_dir / "metrics.json"
    if metrics.is_file():
        result.test_accuracy = json.loads(metrics.read_text()).get("accuracy")
