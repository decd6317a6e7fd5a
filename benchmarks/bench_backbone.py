"""Forward throughput of EfficientNet-Lite0 built from the fast layers vs stock Keras layers.

Run: .venv/bin/python benchmarks/bench_backbone.py [--image-size 224] [--batch 32] [--runs 5]
Expected: ~1 minute on 2 CPU cores, most of it in the stock model; prints one JSON object.
Both models hold the same weights, are jitted the same way and are timed in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import classify_job  # noqa: F401  sets the JAX backend before keras is imported

# isort: split
import jax
import keras
import numpy as np

from classify_job.nets.efficientnet_lite import build_imagenet_classifier
from classify_job.nets.pretrained import import_pretrained, load_pretrained_weights


def jitted_forward(model: keras.Model):
    """Inference-mode forward pass as one compiled function of the weights and the pixels."""
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])

    @jax.jit
    def forward(state, pixels):
        outputs, _ = model.stateless_call(*state, pixels, training=False)
        return outputs

    return lambda pixels: forward(state, pixels)


def images_per_second(forwards: dict, pixels: np.ndarray, runs: int) -> tuple[dict, dict]:
    """Median throughput of each forward over ``runs`` timed calls after a warm-up (compile) call.

    The models take turns in every round, so load from other processes on a shared machine
    falls on both alike and the ratio stays honest.
    """
    outputs = {name: np.asarray(forward(pixels)) for name, forward in forwards.items()}
    times = {name: [] for name in forwards}
    for _ in range(runs):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward(pixels).block_until_ready()
            times[name].append(time.perf_counter() - start)
    return {name: len(pixels) / statistics.median(t) for name, t in times.items()}, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    # The ImageNet weights keep activations realistic, so the output difference means something.
    weights = import_pretrained()
    fast = build_imagenet_classifier(args.image_size, fast=True, random_init=False)
    stock = build_imagenet_classifier(args.image_size, fast=False, random_init=False)
    load_pretrained_weights(fast, weights)
    load_pretrained_weights(stock, weights)
    pixels = np.random.default_rng(0).uniform(0, 255, (args.batch, args.image_size, args.image_size, 3))
    pixels = pixels.astype(np.float32)

    forwards = {"fast": jitted_forward(fast), "stock": jitted_forward(stock)}
    speed, outputs = images_per_second(forwards, pixels, args.runs)
    result = {
        "model": "efficientnet_lite0",
        "image_size": args.image_size,
        "batch": args.batch,
        "fast_images_per_s": round(speed["fast"], 1),
        "stock_images_per_s": round(speed["stock"], 1),
        "speedup": round(speed["fast"] / speed["stock"], 2),
        "max_abs_probability_difference": float(np.abs(outputs["fast"] - outputs["stock"]).max()),
        "same_top1": bool((outputs["fast"].argmax(1) == outputs["stock"].argmax(1)).all()),
        "timed_runs": args.runs,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "keras": keras.__version__,
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
