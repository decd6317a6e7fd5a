"""Which processor this is, how fast int8 and float32 graphs ran on the one that exported them, and
whether ``--runtime auto`` should take the int8 graph here.

int8 pays only where the CPU has 8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX);
without them ONNX Runtime's int8 convolutions can be no faster than float32, or slower. So the
export measures both graphs (:func:`self_benchmark`) and records the CPU; ``auto`` takes int8 on
that same CPU only if it won there by :data:`MIN_SPEEDUP`, never where it lost, and on any other
CPU only if it has VNNI or AMX (:func:`int8_pays`).
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

# The CPU flags that decide int8 speed (as /proc/cpuinfo and lscpu name them).
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
MIN_SPEEDUP = 1.1  # below this, a measured win is within the noise and not worth the risk
BENCH_BATCH, BENCH_THREADS, BENCH_ROUNDS = 32, 2, 5


def describe_cpu(cpuinfo: str | None = None) -> dict[str, Any]:
    """The processor's model name and which of :data:`FLAGS` it has (from ``/proc/cpuinfo``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    present = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "flags": [flag for flag in FLAGS if flag in present],
    }


def int8_pays(benchmark: dict[str, Any] | None, cpu: dict[str, Any]) -> bool:
    """Whether ``auto`` should run the int8 graph on ``cpu``, given the export's ``benchmark``."""
    recorded = (benchmark or {}).get("cpu") or {}
    same = recorded.get("model") == cpu.get("model") and set(recorded.get("flags", ())) == set(cpu["flags"])
    if same:
        return float(benchmark.get("speedup") or 0) >= MIN_SPEEDUP
    return any(flag in cpu["flags"] for flag in INT8_FLAGS)


def self_benchmark(float_graph: Path, int8_graph: Path, pixels: np.ndarray) -> dict[str, Any]:
    """Model-only images/s of both graphs on this CPU (batch 32, 2 threads, the runs alternated,
    medians of :data:`BENCH_ROUNDS`), and the CPU they ran on."""
    from classify_job.classify.backends.onnx import OnnxBackend

    batch = np.resize(pixels, (BENCH_BATCH, *pixels.shape[1:])).astype(np.uint8)
    graphs = {
        "float32": OnnxBackend(float_graph, BENCH_THREADS),
        "int8": OnnxBackend(int8_graph, BENCH_THREADS),
    }
    rates: dict[str, list[float]] = {name: [] for name in graphs}
    for backend in graphs.values():
        backend.predict(batch)  # warm-up: the first run allocates
    for _ in range(BENCH_ROUNDS):
        for name, backend in graphs.items():
            start = time.perf_counter()
            backend.predict(batch)
            rates[name].append(BENCH_BATCH / (time.perf_counter() - start))
    medians = {name: round(statistics.median(r), 1) for name, r in rates.items()}
    return {
        "cpu": describe_cpu(),
        "batch": BENCH_BATCH,
        "threads": BENCH_THREADS,
        "rounds": BENCH_ROUNDS,
        "float32_images_per_s": medians["float32"],
        "int8_images_per_s": medians["int8"],
        "speedup": round(medians["int8"] / medians["float32"], 3),
    }
