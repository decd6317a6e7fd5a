"""XLA:CPU's convolution kernels side by side: milliseconds per Keras step under each setting.

Run: make bench-train-step [ARGS="--rounds 5"]   (.venv/bin/python benchmarks/bench_train_step.py)
Each round starts one process per setting (their order alternates from round to round), so both
see the same machine load; a process times, after warm-up steps:
- ``cnn_step``: ``train_on_batch`` of the from-scratch CNN (28x28x1, batch 256, the Fashion-MNIST
  recipe's augmentation), as ``train --arch cnn`` compiles it;
- ``lite0_finetune_step``: phase 2 of ``train --arch efficientnet_lite0`` (the top 2 blocks and the
  head convolution unfrozen, BatchNorm frozen), 224x224, batch 8;
- ``lite0_forward``: ``classify --runtime keras``'s forward pass (uint8 in, probabilities and
  features out), batch 32.
Settings: ``xla-default`` (YNNPACK convolutions) and ``eigen`` (``CLASSIFY_JOB_CONV_KERNELS``, see
classify_job/runtime.py). The persistent XLA cache keys on XLA_FLAGS, so after the first round
nothing compiles. Expected: 3 rounds took 13 minutes on 2 cores with a load average of 10; an
idle machine should need about a quarter of that. Prints one JSON object: the
processor, jaxlib, per setting and workload the median ms per step and every round's median, the
ratio eigen / xla-default, and the CNN step's GFLOP/s against the machine's peak (cores x GHz x
FLOP per cycle) and against the f32 matrix-product rate measured here (``dot_gflops``).
``--paired N`` adds the robust figure for a shared machine: in one process, each workload's
forward (and gradient) jitted twice, once with XLA's per-compilation ``compiler_options`` for the
eigen setting, timed in N interleaved pairs (a hand-written JAX step, not Keras' trainer).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = ("xla-default", "eigen")
WORKLOADS = ("cnn_step", "lite0_finetune_step", "lite0_forward")
CNN_BATCH, LITE0_TRAIN_BATCH, LITE0_FORWARD_BATCH = 256, 8, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting, alternated")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per workload and process")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--paired", type=int, default=0, help="interleaved in-process pairs (0: none)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.workloads, args.steps, args.paired)))
        return
    started = time.perf_counter()
    if args.paired:
        args.paired_result = run_child("xla-default", args, ["--paired", str(args.paired)])
    rounds = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            rounds[setting].append(run_child(setting, args))
    print(json.dumps({**summary(rounds, args), "wall_s": round(time.perf_counter() - started)}, indent=2))


def run_child(setting: str, args: argparse.Namespace, extra: tuple[str, ...] = ()) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CLASSIFY_JOB_XLA_FLAGS_ADDED")}
    env["CLASSIFY_JOB_CONV_KERNELS"] = setting
    command = [
        sys.executable,
        __file__,
        "--child",
        "--steps",
        str(args.steps),
        "--workloads",
        *args.workloads,
        *extra,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{setting} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(workloads: list[str], steps: int, paired: int = 0) -> dict:
    """In a child process: each workload's median ms per step, and the XLA settings it ran with."""
    import classify_job  # noqa: F401  sets the backend and XLA's kernel flags before keras
    from classify_job.runtime import xla_settings

    out = {"xla": xla_settings()}
    if paired:
        return {**out, **{name: paired_ratio(PAIRED[name](), paired) for name in workloads}}
    for name in workloads:
        started = time.perf_counter()
        step = STEPS[name]
        out[name] = {"ms": timed(step(), steps), "setup_s": round(time.perf_counter() - started, 1)}
    return out


def timed(step, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def cnn_step():
    import numpy as np

    from classify_job.nets.cnn import build_cnn
    from classify_job.train.config import AugmentConfig, TrainConfig
    from classify_job.train.fit import compiled_training_model

    augment = AugmentConfig("horizontal", 0.0, 0.0, 2 / 28, 0.0, 0.0)  # jobs/fashion-mnist-cnn.toml
    config = TrainConfig(
        ".", ".", batch_size=CNN_BATCH, lr_schedule="cosine", warmup_epochs=1, augment=augment
    )
    model = compiled_training_model(build_cnn(10, (28, 28), 1), config, steps_per_epoch=235)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (CNN_BATCH, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, CNN_BATCH)
    return lambda: model.train_on_batch(x, y)


def lite0_finetune_step():
    import numpy as np

    from classify_job.train.config import TrainConfig
    from classify_job.train.finetune import BACKBONE, build_pretrained_classifier, unfreeze_top_blocks
    from classify_job.train.fit import compiled_training_model

    net = build_pretrained_classifier(4, (224, 224), 3)
    unfreeze_top_blocks(net.get_layer(BACKBONE), 2)
    config = TrainConfig(
        ".", ".", arch="efficientnet_lite0", batch_size=LITE0_TRAIN_BATCH, learning_rate=1e-4
    )
    model = compiled_training_model(net, config, steps_per_epoch=50)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (LITE0_TRAIN_BATCH, 224, 224, 3)).astype("float32")
    y = rng.integers(0, 4, LITE0_TRAIN_BATCH)
    return lambda: model.train_on_batch(x, y)


def lite0_forward():
    import numpy as np

    from classify_job.nets.efficientnet_lite import build_classifier
    from classify_job.nets.inference import inference_model
    from classify_job.nets.pretrained import pretrained_backbone

    model = inference_model(build_classifier(pretrained_backbone(224, fast=True), 4))
    x = np.random.default_rng(0).integers(0, 256, (LITE0_FORWARD_BATCH, 224, 224, 3), dtype=np.uint8)
    return lambda: model.predict_on_batch(x)


STEPS = {"cnn_step": cnn_step, "lite0_finetune_step": lite0_finetune_step, "lite0_forward": lite0_forward}


# The eigen setting as one compilation's option rather than the process's XLA_FLAGS.
EIGEN_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def paired_ratio(work, pairs: int) -> dict:
    """``work`` = (function, arguments) jitted with XLA's defaults and with EIGEN_OPTIONS, timed in
    ``pairs`` interleaved pairs (the order swaps every pair): medians and the median of the ratios."""
    import jax

    function, arguments = work
    jitted = {"xla-default": jax.jit(function), "eigen": jax.jit(function, compiler_options=EIGEN_OPTIONS)}
    for f in jitted.values():
        for _ in range(2):
            jax.block_until_ready(f(*arguments))
    times: dict[str, list[float]] = {k: [] for k in jitted}
    for i in range(pairs):
        for name in SETTINGS if i % 2 == 0 else SETTINGS[::-1]:
            started = time.perf_counter()
            jax.block_until_ready(jitted[name](*arguments))
            times[name].append(time.perf_counter() - started)
    ratios = [e / d for e, d in zip(times["eigen"], times["xla-default"], strict=True)]
    return {
        "median_ms": {k: round(1000 * statistics.median(v), 1) for k, v in times.items()},
        "eigen_over_default": round(statistics.median(ratios), 3),
        "eigen_faster_pairs": sum(r < 1 for r in ratios),
        "pairs": pairs,
    }


def gradient_step(net, batch: int, x, y):
    """A plain JAX train step of ``net`` (loss, gradient, SGD update): what XLA compiles for Keras'."""
    import jax
    import jax.numpy as jnp

    def loss(trainable, frozen, x, y):
        probs, frozen = net.stateless_call(trainable, frozen, x, training=True)
        return -jnp.mean(jnp.log(probs[jnp.arange(batch), y] + 1e-7)), frozen

    def step(trainable, frozen, x, y):
        (value, frozen), grads = jax.value_and_grad(loss, has_aux=True)(trainable, frozen, x, y)
        return [w - 1e-3 * g for w, g in zip(trainable, grads, strict=True)], value

    return step, (_values(net.trainable_variables), _values(net.non_trainable_variables), x, y)


def _values(variables) -> list:
    return [v.value for v in variables]


def paired_cnn():
    import numpy as np

    from classify_job.nets.cnn import build_cnn

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (CNN_BATCH, 28, 28, 1)).astype("float32")
    return gradient_step(build_cnn(10, (28, 28), 1), CNN_BATCH, x, rng.integers(0, 10, CNN_BATCH))


def paired_lite0_finetune():
    import numpy as np

    from classify_job.train.finetune import BACKBONE, build_pretrained_classifier, unfreeze_top_blocks

    net = build_pretrained_classifier(4, (224, 224), 3)
    unfreeze_top_blocks(net.get_layer(BACKBONE), 2)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (LITE0_TRAIN_BATCH, 224, 224, 3)).astype("float32")
    return gradient_step(net, LITE0_TRAIN_BATCH, x, rng.integers(0, 4, LITE0_TRAIN_BATCH))


def paired_lite0_forward():
    import numpy as np

    from classify_job.nets.efficientnet_lite import build_classifier
    from classify_job.nets.inference import inference_model
    from classify_job.nets.pretrained import pretrained_backbone

    model = inference_model(build_classifier(pretrained_backbone(224, fast=True), 4))
    x = np.random.default_rng(0).integers(0, 256, (LITE0_FORWARD_BATCH, 224, 224, 3), dtype=np.uint8)

    def forward(trainable, frozen, x):
        return model.stateless_call(trainable, frozen, x, training=False)[0]

    return forward, (_values(model.trainable_variables), _values(model.non_trainable_variables), x)


PAIRED = {
    "cnn_step": paired_cnn,
    "lite0_finetune_step": paired_lite0_finetune,
    "lite0_forward": paired_lite0_forward,
}


def cnn_step_gflop() -> float:
    """FLOPs of one CNN train step: 3x the forward convolutions and Dense (2 FLOPs a multiply-add)."""
    import classify_job  # noqa: F401
    from classify_job.nets.cnn import build_cnn

    per_image = 0
    for layer in build_cnn(10, (28, 28), 1).layers:
        if layer.__class__.__name__ == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            per_image += 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
        elif layer.__class__.__name__ == "Dense":
            per_image += 2 * layer.input.shape[-1] * layer.units
    return 3 * per_image * CNN_BATCH / 1e9


def peak_gflops() -> dict:
    """cores x GHz x f32 FLOP per cycle, with the assumptions spelled out."""
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    vendor, family = info.get("Vendor ID", ""), int(info.get("CPU family", "0") or 0)
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 26):
        per_cycle, why = 64, "2 AVX-512 FMA units x 16 f32 x 2"
    elif "avx512f" in flags or "fma" in flags:
        per_cycle, why = 32, "2 FMA pipes x 8 f32 x 2 (AVX2, or Zen 4's AVX-512 split into 256-bit halves)"
    else:
        per_cycle, why = 16, "no FMA: 2 x 4 f32 x 2"
    if info.get("CPU max MHz"):
        ghz, ghz_from = float(info["CPU max MHz"]) / 1000, "lscpu CPU max MHz"
    else:
        ghz, ghz_from = float(info.get("BogoMIPS", "4000")) / 2000, "BogoMIPS / 2 (the TSC clock; no boost)"
    cores = os.cpu_count() or 1
    return {
        "gflops": round(cores * ghz * per_cycle, 1),
        "cores": cores,
        "ghz": round(ghz, 2),
        "ghz_from": ghz_from,
        "flop_per_cycle": per_cycle,
        "flop_per_cycle_from": why,
    }


def dot_gflops(size: int = 2048, repeats: int = 7) -> float:
    """The f32 matrix product rate this process reaches (median of ``repeats``): an attainable peak
    measured on the machine itself, for where the clock the VM reports is not the clock it runs at
    (a single convolution here ran above the peak computed from BogoMIPS)."""
    import classify_job  # noqa: F401  the project's XLA flags, as the children have them

    # isort: split
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return round(2 * size**3 / statistics.median(times) / 1e9, 1)


def lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def summary(rounds: dict[str, list[dict]], args: argparse.Namespace) -> dict:
    from importlib.metadata import version

    from common import machine

    result: dict = {"machine": machine(), "jaxlib": version("jaxlib"), "rounds": args.rounds, "settings": {}}
    for setting, runs in rounds.items():
        per = {w: [run[w]["ms"] for run in runs] for w in args.workloads}
        result["settings"][setting] = {
            "xla_flags": runs[0]["xla"]["flags"],
            **{w: {"median_ms": statistics.median(v), "rounds_ms": v} for w, v in per.items()},
        }
    medians = {s: result["settings"][s] for s in SETTINGS}
    result["eigen_over_default"] = {
        w: round(medians["eigen"][w]["median_ms"] / medians["xla-default"][w]["median_ms"], 3)
        for w in args.workloads
    }
    if args.paired:
        result["paired_in_process"] = {w: args.paired_result[w] for w in args.workloads}
    if "cnn_step" in args.workloads:
        gflop, peak, dot = cnn_step_gflop(), peak_gflops(), dot_gflops()
        result["cnn_step_gflops"] = {
            "gflop_per_step": round(gflop, 2),
            "flops_counted": "3 x forward Conv2D + Dense, 2 per multiply-add, batch 256 (BatchNorm etc. not)",
            "peak": peak,
            "dot_gflops": dot,
            **{
                s: {
                    "gflops": round(gflop / (m["cnn_step"]["median_ms"] / 1000), 1),
                    "share_of_peak": round(gflop / (m["cnn_step"]["median_ms"] / 1000) / peak["gflops"], 3),
                    "share_of_dot": round(gflop / (m["cnn_step"]["median_ms"] / 1000) / dot, 3),
                }
                for s, m in medians.items()
            },
        }
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
