"""Give a bundle its int8 graph: quantise the verified float ONNX graph, gate it, measure it.

``model.int8.onnx`` is listed in ``bundle.json`` ``exports`` as ``format: onnx-int8`` with its
SHA-256, the library versions, how it was quantised, the gate's figures under ``verified``
(:mod:`classify_job.train.int8_gate`) and a short self-benchmark of both graphs on the exporting
CPU (:func:`classify_job.classify.backends.cpu.self_benchmark`), which ``--runtime auto`` reads to
decide where the int8 graph runs; from ``train``, also its own decision rule
(:mod:`classify_job.train.int8_rule`). A graph the gate refuses is not kept: nothing is written.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.bundle import BundleSpec, read_spec, write_spec
from classify_job.classify.backends import graph_outputs
from classify_job.errors import ExportError
from classify_job.hashing import content_hash
from classify_job.train.export import INT8_FILE
from classify_job.train.int8_gate import Labelled, Verdict, calibration_images, gate_images, judge
from classify_job.train.int8_rule import THROUGH_INT8, Int8Refit
from classify_job.versions import library_versions

log = logging.getLogger(__name__)

FORMAT, FILE = "onnx-int8", INT8_FILE
LIBRARIES = ("onnx", "onnxruntime")


def export_int8(bundle_dir: Path, data: Path | None = None) -> dict[str, Any]:
    """Quantise, gate and benchmark ``bundle_dir``'s float ONNX graph on its own images (training
    split to calibrate, test split to judge; ``data``, class folders, instead when given); record
    the entry in ``bundle.json`` and return it. Raises as :func:`int8_entry`, with nothing kept."""
    bundle_dir = Path(bundle_dir)
    spec = discard(bundle_dir, read_spec(bundle_dir))  # it came from an earlier float graph
    entry = int8_entry(bundle_dir, spec, gate_images(spec, data), calibration_images(spec, data))
    write_spec(bundle_dir, with_int8(spec, entry))
    return entry


def int8_entry(
    bundle_dir: Path,
    spec: BundleSpec,
    images: Labelled,
    calibration: np.ndarray,
    rule: Any = None,
    refit: Int8Refit | None = None,
) -> dict[str, Any]:
    """Write ``model.int8.onnx`` into ``bundle_dir`` from the verified float graph ``spec`` lists,
    calibrated on ``calibration`` and judged on ``images`` (accepted labels by ``rule``, the
    bundle's own unless given, for the float graph; for the int8 graph by the rule ``refit`` fits
    it, recorded in the entry, else the same); returns its ``exports`` entry.

    Raises ExportError, removing the file, when the bundle has no verified float graph, when
    quantisation fails, or when the gate refuses the int8 graph (the reasons are in the message).
    """
    from classify_job.classify.backends import export_files
    from classify_job.classify.backends.cpu import self_benchmark
    from classify_job.nets.quantize import quantize_graph

    float_entry = spec.verified_export("onnx")
    if float_entry is None:
        raise ExportError(
            f"{bundle_dir} has no verified ONNX graph to quantise; run `classify-job export` first"
        )
    float_path = export_files(bundle_dir, float_entry)
    target = Path(bundle_dir) / FILE
    try:
        with atomic.atomic_path(target) as tmp:
            recipe = quantize_graph(float_path, tmp, calibration)
        float_out, int8_out = graph_outputs(float_path, images.pixels), graph_outputs(target, images.pixels)
        own = refit(float_path, target, images.seen(int8_out, THROUGH_INT8)) if refit else None
        verdict = judge(bundle_dir, spec, images, float_out, int8_out, rule, own.rule if own else None)
        benchmark = self_benchmark(float_path, target, images.pixels[:32]) if verdict.passed else None
    except Exception as exc:
        target.unlink(missing_ok=True)
        raise ExportError(f"int8 quantisation of {bundle_dir} failed: {type(exc).__name__}: {exc}") from exc
    if not verdict.passed:
        target.unlink(missing_ok=True)
        raise ExportError(refusal(verdict))
    return {
        "format": FORMAT,
        "file": FILE,
        "sha256": content_hash(target),
        "files": {},
        "quantized_from": {"file": float_entry["file"], "sha256": float_entry["sha256"]},
        "quantization": recipe,
        "versions": library_versions(LIBRARIES),
        "verified": {"passed": True, **verdict.figures},
        "benchmark": benchmark,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **(own.keys() if own else {}),  # its own decision rule (classify_job.train.int8_rule)
    }


def with_int8(spec: BundleSpec, entry: dict[str, Any]) -> BundleSpec:
    """``spec`` with ``entry`` as its one int8 export."""
    return dataclasses.replace(spec, exports=(*_others(spec), entry))


def refusal(verdict: Verdict) -> str:
    figures = verdict.figures
    return (
        f"the int8 graph was refused, so none was kept: {'; '.join(verdict.reasons)} "
        f"(top-1 agreement {figures['top1_agreement']:.4f} on {figures['images']} images, "
        f"{figures['source']})"
    )


def discard(bundle_dir: Path, spec: BundleSpec) -> BundleSpec:
    """Remove the int8 graph and its entry; returns the spec without it."""
    (Path(bundle_dir) / FILE).unlink(missing_ok=True)
    if any(e.get("format") == FORMAT for e in spec.exports):
        spec = dataclasses.replace(spec, exports=_others(spec))
        write_spec(bundle_dir, spec)
    return spec


def _others(spec: BundleSpec) -> tuple[dict, ...]:
    return tuple(e for e in spec.exports if e.get("format") != FORMAT)
