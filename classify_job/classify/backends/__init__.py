"""Inference back-ends: the bundle's Keras model, or a graph exported from it (ONNX Runtime,
its int8 form on ONNX Runtime, OpenVINO). Each takes uint8 batches (N, H, W, C) and returns
(probabilities, features).

``auto`` takes the first runtime of :data:`AUTO_ORDER` that the bundle has an export for and that
is installed; Keras needs no export and always works. The int8 graph comes first only on a CPU
where it pays (:func:`classify_job.classify.backends.cpu.int8_pays`: it measured faster there at
export, or, on another CPU, the CPU has VNNI or AMX). Only the chosen back-end's libraries are
imported, so an exported runtime never imports Keras or JAX.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np

from classify_job.bundle import BundleSpec, bundle_file
from classify_job.classify.config import RUNTIMES
from classify_job.errors import BundleError, InputError

# ONNX Runtime first by far; OpenVINO before Keras because it starts faster, which wins on the
# nightly increment, though Keras computes faster on a backfill (docs/benchmarks.md).
AUTO_ORDER = ("onnx-int8", "onnx", "openvino", "keras")
MODULES = {"onnx-int8": "onnxruntime", "onnx": "onnxruntime", "openvino": "openvino", "keras": "keras"}


class Backend(Protocol):
    name: str

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def choose_runtime(spec: BundleSpec, requested: str, cpu: dict | None = None) -> str:
    """``requested``, or for ``auto`` the first of AUTO_ORDER that the bundle and this install allow
    (the int8 graph only where it pays on ``cpu``, this machine's unless given)."""
    if requested not in RUNTIMES:
        raise InputError(f"--runtime must be one of {', '.join(RUNTIMES)}. Received: {requested!r}")
    if requested != "auto":
        return requested
    return next(r for r in AUTO_ORDER if r == "keras" or _usable(spec, r, cpu))


def _usable(spec: BundleSpec, runtime: str, cpu: dict | None) -> bool:
    export = spec.verified_export(runtime)
    if export is None or not _installed(runtime):
        return False
    if runtime != "onnx-int8":
        return True
    from classify_job.classify.backends.cpu import describe_cpu, int8_pays

    return int8_pays(export.get("benchmark"), cpu or describe_cpu())


def _installed(runtime: str) -> bool:
    return importlib.util.find_spec(MODULES[runtime]) is not None


def open_backend(bundle: Path, spec: BundleSpec, runtime: str, batch_size: int, threads: int) -> Backend:
    """Load the model for ``runtime`` (already chosen); ``threads`` bounds its compute threads."""
    if runtime == "keras":
        from classify_job.classify.backends.keras import KerasBackend

        return KerasBackend(bundle, spec, batch_size)
    export = spec.verified_export(runtime)
    if export is None:
        raise BundleError(f"{bundle} has no verified {runtime} export; run `classify-job export {bundle}`")
    if not _installed(runtime):
        raise BundleError(f"--runtime {runtime} needs the {MODULES[runtime]} package, which is not installed")
    return load_graph(export_files(bundle, export), runtime, threads)


def export_files(bundle: Path, export: dict) -> Path:
    """The export's main file, after checking it and every file it reads (:func:`bundle_file`):
    ``sha256`` is the main file's hash, ``files`` maps each other file to its hash. OpenVINO's
    weights (``.bin`` beside the ``.xml``) are checked even where no hash was recorded for them
    (exports from before ``files``), so no runtime reads a file outside the bundle."""
    remedy = f"export {bundle} again"
    files = export.get("files") or {}
    if not isinstance(files, dict) or export.get("sha256") is None:
        raise BundleError(f"{bundle}'s {export.get('format')} export has no sha256 for each file; {remedy}")
    path = bundle_file(bundle, export.get("file"), export["sha256"], remedy)
    needed = dict(files)
    if export.get("format") == "openvino":
        needed.setdefault(str(PurePosixPath(export["file"]).with_suffix(".bin")), None)
    for relname, sha256 in needed.items():
        bundle_file(bundle, relname, sha256, remedy)
    return path


def load_graph(path: Path, runtime: str, threads: int) -> Backend:
    """An exported graph's back-end (``onnx``, ``onnx-int8`` or ``openvino``) for the file at ``path``."""
    if runtime in ("onnx", "onnx-int8"):
        from classify_job.classify.backends.onnx import OnnxBackend

        return OnnxBackend(path, threads, runtime)
    from classify_job.classify.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(path, threads)


def graph_outputs(path: Path, pixels: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, features) of the ONNX graph at ``path`` on ``pixels``, ``batch`` at a time."""
    graph = load_graph(path, "onnx", threads=2)
    parts = [graph.predict(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    return tuple(np.concatenate([np.asarray(p[k], np.float32) for p in parts]) for k in (0, 1))
