"""Local engine vs Ray engine on the same tree and model, on this machine.

    make bench-engines            # or: .venv/bin/python benchmarks/bench_engines.py --per-class 64

Builds the four-class sample tree (product-photo sized JPEGs) and an EfficientNet-Lite0 bundle
(ImageNet backbone, untrained 4-class head: speed does not depend on the head's weights), then
classifies the tree with each engine several times (--fresh) and prints JSON: median images/s of
the classification itself and median wall seconds including start-up. Expected runtime: ~3-5 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import classify_job  # noqa: F401  forces the JAX backend
from classify_job.bundle import BundleSpec, save_bundle
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.pipeline import run_classify
from classify_job.nets.efficientnet_lite import build_classifier
from classify_job.nets.pretrained import pretrained_backbone
from classify_job.sampledata.photos import CLASSES, write_sample_dataset


def build_bundle(directory: Path) -> Path:
    model = build_classifier(pretrained_backbone(224), len(CLASSES))
    spec = BundleSpec(
        labels=tuple(CLASSES), image_size=(224, 224), color_mode="rgb", architecture="efficientnet_lite0"
    )
    save_bundle(directory, model, spec)
    return directory


def measure(config: ClassifyConfig, repeats: int) -> dict:
    rates, walls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_classify(dataclasses.replace(config, fresh=True))
        walls.append(time.perf_counter() - start)
        rates.append(result.progress.images_per_second)
    return {
        "images_per_second_median": round(statistics.median(rates), 1),
        "wall_s_median": round(statistics.median(walls), 2),
        "runs": [round(r, 1) for r in rates],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sample_dataset(root / "tree", per_class=args.per_class, seed=1)
        local = ClassifyConfig(input_dir=root / "tree", model=build_bundle(root / "bundle"), out=root / "out")
        report = {
            "files": args.per_class * len(CLASSES),
            "model": "efficientnet_lite0 224x224, batch 32",
            "local": measure(local, args.repeats),
            "ray": measure(dataclasses.replace(local, engine="ray", ray_actors=1), args.repeats),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
