"""Flip test-time augmentation and the averaged out-of-fold heads, on the same weights.

Run: .venv/bin/python benchmarks/bench_heads_tta.py [--datasets fashion300,sample] [--image-size 224]
Datasets: (a) fashion300: 1,200 Fashion-MNIST training images of four confusable classes (t-shirt,
pullover, coat, shirt; 300 each, ``make bench-coverage``'s set, 10% of them validation) tested on
600 others (150 per class); (b) sample: the 600 procedural sample photos split 70/10/20.
EfficientNet-Lite0's frozen features are extracted once per image and once per mirrored image;
the head trained on all training features (as ``train`` does), the ``FOLDS`` out-of-fold heads and
both together are then scored on the test images with and without the mirror averaged in.
``--throughput`` instead times ONNX Runtime on the served graph: one head, the fold heads, the flip.
Expected: ~4 min for fashion300, ~2 min for sample, ~2 min for --throughput on 2 busy cores at
224 px. Prints JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import classify_job  # noqa: F401  sets the JAX backend before keras is imported

# isort: split
import numpy as np
from common import DATA

from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.dataset import LoadedSplit, index_dataset, load_split
from classify_job.train.finetune import (
    BACKBONE,
    build_pretrained_classifier,
    extract_features,
    feature_function,
)
from classify_job.train.lite0_heads import FOLDS, fit_head, fit_head_model, fresh_head, head_model
from classify_job.train.pipeline import start_run

FASHION_AUGMENT = AugmentConfig("horizontal", 0.0, 0.0, 0.1, 0.0, 0.0)


def load_run(name: str, size: int, out: Path):
    if name == "fashion300":
        train_dir = DATA / "cov-fmnist-train-300" / "train"
        config = TrainConfig(train_dir, out, arch="efficientnet_lite0", image_size=size, val_split=0.1,
                             test_split=0.0, augment=FASHION_AUGMENT, overwrite=True, int8=False)  # fmt: skip
        run = start_run(config)
        test_dir = DATA / "cov-fmnist-familiar-150" / "test"
        index = index_dataset(test_dir, 0.0, 0.0)
        test = load_split(test_dir, index.splits["train"], config.image_size, "rgb")
        remap = np.array([run.data.index.classes.index(c) for c in index.classes])
        test = LoadedSplit(test.images, remap[test.labels], test.relpaths)
        return run, test
    config = TrainConfig(DATA / "sample-photos-600", out, arch="efficientnet_lite0", image_size=size,
                         val_split=0.1, test_split=0.2, overwrite=True, int8=False)  # fmt: skip
    run = start_run(config)
    return run, run.data.test


def scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)
    return {
        "accuracy": round(float((probs.argmax(1) == labels).mean()), 4),
        "log_loss": round(float(-np.log(p).mean()), 4),
    }


def measure(name: str, args: argparse.Namespace) -> dict:
    run, test = load_run(name, args.image_size, args.out / name)
    classes = len(run.data.index.classes)
    net = build_pretrained_classifier(classes, run.config.image_size, 3, run.options)
    features_of = feature_function(net.get_layer(BACKBONE))
    started = time.perf_counter()
    feats = {
        split: (extract_features(features_of, images), extract_features(features_of, images[:, :, ::-1]))
        for split, images in (
            ("train", run.data.train.images),
            ("val", run.data.val.images),
            ("test", test.images),
        )
    }
    extraction = time.perf_counter() - started
    on_features = dataclasses.replace(
        run,
        data=dataclasses.replace(
            run.data,
            train=LoadedSplit(feats["train"][0], run.data.train.labels, ()),
            val=LoadedSplit(feats["val"][0], run.data.val.labels, ()),
        ),
        on_epoch=None,
    )
    options = run.options
    fit_head(net, on_features, options.head_lr_factor)
    main = head_model(net)
    y = run.data.train.labels
    fold = np.random.default_rng(run.config.seed).permutation(len(y)) % FOLDS
    heads = []
    for k in range(FOLDS):
        model = fresh_head(classes, options.dropout, options.head_width)
        part = dataclasses.replace(
            on_features.data, train=LoadedSplit(feats["train"][0][fold != k], y[fold != k], ())
        )
        fit_head_model(model, dataclasses.replace(on_features, data=part), options.head_lr_factor)
        heads.append(model)

    def predict(model, split):
        plain, mirrored = (
            np.asarray(model.predict(f, batch_size=256, verbose=0), np.float64) for f in feats[split]
        )
        return plain, (plain + mirrored) / 2

    members = {"single": [main], "folds": heads, "both": [main, *heads]}
    found = {}
    for split, labels in (("test", test.labels), ("val", run.data.val.labels)):
        per = {id(m): predict(m, split) for m in [main, *heads]}
        for label, models in members.items():
            plain = np.mean([per[id(m)][0] for m in models], axis=0)
            tta = np.mean([per[id(m)][1] for m in models], axis=0)
            found[f"{split}/{label}"] = scores(plain, labels)
            found[f"{split}/{label}+flip"] = scores(tta, labels)
            if split == "test":
                right, right_tta = plain.argmax(1) == labels, tta.argmax(1) == labels
                found[f"{split}/{label}+flip"]["fixed_broken"] = [
                    int((~right & right_tta).sum()),
                    int((right & ~right_tta).sum()),
                ]
    return {"images": {"train": len(y), "val": len(run.data.val), "test": len(test)},
            "feature_extraction_s_both_views": round(extraction, 1), **found}  # fmt: skip


def throughput(args: argparse.Namespace, rounds: int = 5, batch: int = 32) -> dict:
    """ONNX Runtime images/s (model only, 2 threads) of the served Lite0 graph: one head, the fold
    heads' mean, and that with the flip; the graphs' timings interleaved round by round; medians."""
    from classify_job.classify.backends import load_graph
    from classify_job.nets.graphs import export_onnx
    from classify_job.train.finetune import FinetuneOptions

    size = (args.image_size, args.image_size)
    variants = {
        "one_head": FinetuneOptions(fold_heads=False),
        "fold_heads": FinetuneOptions(),
        "fold_heads+flip": FinetuneOptions(tta="flip"),
    }
    graphs = {}
    for name, options in variants.items():
        path = args.out / f"throughput-{name}-{args.image_size}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(build_pretrained_classifier(4, size, 3, options), path)
        graphs[name] = load_graph(path, "onnx", threads=2)
    pixels = np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    seconds = {name: [] for name in graphs}
    for graph in graphs.values():
        graph.predict(pixels)  # warm-up
    for _ in range(rounds):
        for name, graph in graphs.items():
            started = time.perf_counter()
            graph.predict(pixels)
            seconds[name].append(time.perf_counter() - started)
    rate = {name: round(batch / float(np.median(s)), 1) for name, s in seconds.items()}
    return {"onnx_images_per_s": rate, "batch": batch, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="fashion300,sample")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=DATA / "heads-tta-out")
    parser.add_argument("--throughput", action="store_true", help="only the ONNX Runtime images/s")
    args = parser.parse_args()
    if args.throughput:
        print(json.dumps(throughput(args), indent=1))
        return
    results = {}
    for name in args.datasets.split(","):
        results[name] = measure(name, args)
        print(f"[{name}] {json.dumps(results[name])}", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
