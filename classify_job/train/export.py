"""Give a bundle its exported inference graphs, verified against the Keras model on real images.

``model.onnx`` (ONNX Runtime) and ``openvino/model.xml`` + ``.bin`` are written next to
``model.keras`` and listed in ``bundle.json`` under ``exports`` with their SHA-256 (the main file's
as ``sha256``, the others', such as OpenVINO's ``.bin``, under ``files``), the library
versions and the verification. An export is kept only if, on the bundle's own test split (or the
images of ``data``), its probabilities are within :data:`TOLERANCE` of Keras' and its top label is
the same wherever Keras' top two are further apart than that. ``model_id`` does not change: the
weights are the same.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.bundle import BundleSpec, load_bundle, write_spec
from classify_job.errors import DatasetError, ExportError, InputError
from classify_job.hashing import content_hash
from classify_job.imageio import load_image
from classify_job.train.evaluate import labelled_files
from classify_job.versions import library_versions
from classify_job.walk import fs_path, iter_files

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
VERIFY_IMAGES = 128
FORMATS = {"onnx": "model.onnx", "openvino": "openvino/model.xml"}
# Files a format reads besides its main one; each is recorded with its SHA-256 under ``files``.
COMPANIONS = {"onnx": (), "openvino": ("openvino/model.bin",)}
LIBRARIES = {
    "onnx": ("keras", "jax2onnx", "onnx", "onnxruntime"),
    "openvino": ("keras", "jax2onnx", "openvino"),
}


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """The bundle's spec after export, and what each format's verification found."""

    spec: BundleSpec
    verified: dict[str, dict[str, Any]]


def export_bundle(bundle_dir: Path, data: Path | None = None) -> ExportResult:
    """Export ``bundle_dir``'s model to every format, verify each on real images, record them.

    Raises ExportError (after removing what it wrote) when an export fails or does not match;
    InputError when there are no images to verify on.
    """
    from classify_job.nets.graphs import export_onnx, export_openvino
    from classify_job.nets.inference import inference_model

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    pixels, source = verification_images(bundle.spec, data)
    keras_model = inference_model(bundle.model)
    reference = _outputs(lambda x: _pair(keras_model.predict_on_batch(x)), pixels)
    written: dict[str, dict[str, Any]] = {}
    try:
        with atomic.atomic_path(bundle_dir / FORMATS["onnx"]) as tmp:
            written["onnx"] = export_onnx(bundle.model, tmp)
        written["openvino"] = export_openvino(bundle_dir / FORMATS["onnx"], bundle_dir / FORMATS["openvino"])
        verified = {f: verify(bundle_dir / FORMATS[f], f, pixels, reference, source) for f in FORMATS}
    except Exception as exc:
        _remove(bundle_dir, bundle.spec)
        raise ExportError(f"export of {bundle_dir} failed: {type(exc).__name__}: {exc}") from exc
    failed = {f: v for f, v in verified.items() if not v["passed"]}
    if failed:
        _remove(bundle_dir, bundle.spec)
        raise ExportError(f"the exported graph does not match the Keras model, so none was kept: {failed}")
    return ExportResult(_record(bundle_dir, bundle.spec, written, verified), verified)


def _pair(outputs: dict) -> tuple[np.ndarray, np.ndarray]:
    return outputs["probabilities"], outputs["features"]


def verification_images(spec: BundleSpec, data: Path | None) -> tuple[np.ndarray, str]:
    """Up to VERIFY_IMAGES decoded images: from ``data`` if given, else the bundle's test split."""
    if data is not None:
        if not Path(data).is_dir():
            raise InputError(f"--data must be a folder of images. Received: {data}")
        paths = [e.path for e in iter_files(data) if e.stat_error is None and e.size]
        source = f"images under {data}"
    else:
        trained_on = spec.extra.get("training", {}).get("data_dir")
        if not trained_on or not Path(trained_on).is_dir():
            raise InputError(
                f"the bundle's training data ({trained_on}) is not here; give --data DIR to verify on"
            )
        try:
            samples = labelled_files(Path(trained_on), "test", spec.labels, spec.extra)
            split = "test split"
            if not samples:  # trained without a test split: any of its images will do
                samples, split = labelled_files(Path(trained_on), "all", spec.labels, spec.extra), "images"
        except DatasetError as exc:
            raise InputError(f"cannot read the bundle's test split: {exc}; give --data DIR") from exc
        paths = [fs_path(trained_on, s.relpath, s.relpath_bytes) for s in samples]
        source = f"the {split} of {trained_on}"
    pixels = _decode(paths[:: max(1, len(paths) // VERIFY_IMAGES)][:VERIFY_IMAGES], spec)
    if len(pixels) == 0:
        raise InputError(f"no readable images in {source} to verify the export on")
    return pixels, source


def _decode(paths: list[str], spec: BundleSpec) -> np.ndarray:
    images = []
    for path in paths:
        try:
            images.append(load_image(path, spec.image_size, spec.color_mode).pixels)
        except Exception as exc:  # an unreadable verification image is skipped, not fatal
            log.debug("skipping %s for verification: %s", path, exc)
    return np.stack(images) if images else np.zeros((0,), np.uint8)


def verify(path: Path, runtime: str, pixels: np.ndarray, reference: tuple, source: str) -> dict[str, Any]:
    """Run the exported graph on ``pixels`` with its runtime and compare with Keras' outputs."""
    from classify_job.classify.backends import load_graph

    probs, features = _outputs(load_graph(path, runtime, threads=2).predict, pixels)
    ref, ref_features = reference
    ordered = np.sort(ref, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > TOLERANCE
    disagree = int(((probs.argmax(1) != ref.argmax(1)) & clear).sum())
    prob_diff = float(np.abs(probs - ref).max())
    return {
        "passed": prob_diff <= TOLERANCE and disagree == 0,
        "images": len(pixels),
        "source": source,
        "max_abs_prob_diff": prob_diff,
        "max_abs_feature_diff": float(np.abs(features - ref_features).max()),
        "top1_disagreements": disagree,
        "tolerance": TOLERANCE,
    }


def _outputs(predict: Any, pixels: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    parts = [predict(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    return tuple(np.concatenate([np.asarray(p[k], np.float32) for p in parts]) for k in (0, 1))


def _record(bundle_dir, spec, written, verified) -> BundleSpec:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    entries = [
        {
            "format": f,
            "file": FORMATS[f],
            "sha256": content_hash(bundle_dir / FORMATS[f]),
            "files": {name: content_hash(bundle_dir / name) for name in COMPANIONS[f]},
            **written.get(f, {}),
            "versions": library_versions(LIBRARIES[f]),
            "verified": verified[f],
            "created_at": now,
        }
        for f in FORMATS
    ]
    spec = dataclasses.replace(spec, exports=tuple(entries))
    write_spec(bundle_dir, spec)
    return spec


def _remove(bundle_dir: Path, spec: BundleSpec) -> None:
    """No export is better than one that was not checked: remove every exported file, and any
    earlier export's record."""
    for name in ("model.onnx", "openvino/model.xml", "openvino/model.bin"):
        (bundle_dir / name).unlink(missing_ok=True)
    if spec.exports:
        write_spec(bundle_dir, dataclasses.replace(spec, exports=()))
