"""Give a bundle its exported inference graphs, verified against the Keras model on real images.

``model.onnx`` (ONNX Runtime) and ``openvino/model.xml`` + ``.bin`` are written next to
``model.keras`` and listed in ``bundle.json`` under ``exports`` with their SHA-256 (the main file's
as ``sha256``, the others', such as OpenVINO's ``.bin``, under ``files``), the library
versions and the verification. An export is kept only if, on the bundle's own test split (or the
images of ``data``), its probabilities are within :data:`TOLERANCE` of Keras' and its top label is
the same wherever Keras' top two are further apart than that. ``model_id`` does not change: the
weights are the same.

:func:`export_graphs` writes and verifies the files and computes their ``exports`` entries;
:func:`with_exports` records entries in a spec; :func:`export_bundle` (``classify-job export``)
does both on a bundle on disk and rewrites its ``bundle.json`` once. Training calls the first two
with the model it holds and the test images it decoded, and writes ``bundle.json`` itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.bundle import BundleSpec, load_bundle, write_spec
from classify_job.errors import DatasetError, ExportError, InputError
from classify_job.hashing import content_hash
from classify_job.imageio import load_image
from classify_job.train.dataset import SPLIT_NAMES, LabelledFile, TrainingData
from classify_job.train.evaluate import labelled_files
from classify_job.versions import library_versions
from classify_job.walk import fs_path, iter_files

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
VERIFY_IMAGES = 128
FORMATS = {"onnx": "model.onnx", "openvino": "openvino/model.xml"}
# Files a format reads besides its main one; each is recorded with its SHA-256 under ``files``.
COMPANIONS = {"onnx": (), "openvino": ("openvino/model.bin",)}
INT8_FILE = "model.int8.onnx"  # classify_job.train.int8_export: added afterwards, from model.onnx
# Every file an export may leave in a bundle: the main files, their companions and the int8 graph.
EXPORT_FILES = (*FORMATS.values(), *(name for names in COMPANIONS.values() for name in names), INT8_FILE)
LIBRARIES = {
    "onnx": ("keras", "jax2onnx", "onnx", "onnxruntime"),
    "openvino": ("keras", "jax2onnx", "openvino"),
}


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """The bundle's spec after export, and what each format's verification found."""

    spec: BundleSpec
    verified: dict[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Verification:
    """Decoded images to compare the exported graphs with Keras on, and where they came from."""

    pixels: np.ndarray
    source: str


def export_bundle(bundle_dir: Path, data: Path | None = None) -> ExportResult:
    """Export ``bundle_dir``'s model to every format, verify each on real images, and record them
    in its ``bundle.json`` (written once: with the exports, or without any earlier one on failure).

    Raises ExportError (after removing what it wrote) when an export fails or does not match;
    InputError when there are no images to verify on.
    """
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    try:
        entries = export_graphs(bundle.model, bundle_dir, verification_images(bundle.spec, data))
    except ExportError:
        if bundle.spec.exports:  # no record of an export that is gone
            write_spec(bundle_dir, dataclasses.replace(bundle.spec, exports=()))
        raise
    spec = with_exports(bundle.spec, entries)
    write_spec(bundle_dir, spec)
    return ExportResult(spec, {entry["format"]: entry["verified"] for entry in entries})


def export_graphs(model: Any, bundle_dir: Path, check: Verification) -> list[dict[str, Any]]:
    """Write every format of ``model`` into ``bundle_dir``, verify each on ``check``'s images, and
    return their ``exports`` entries (``bundle.json`` is not touched).

    Raises ExportError, after removing every exported file, when an export fails or does not match.
    """
    from classify_job.nets.graphs import export_onnx, export_openvino
    from classify_job.nets.inference import inference_model

    keras_model = inference_model(model)
    reference = _outputs(lambda x: _pair(keras_model.predict_on_batch(x)), check.pixels)
    written: dict[str, dict[str, Any]] = {}
    (bundle_dir / INT8_FILE).unlink(missing_ok=True)  # quantised from the float graph replaced here
    try:
        with atomic.atomic_path(bundle_dir / FORMATS["onnx"]) as tmp:
            written["onnx"] = export_onnx(model, tmp)
        written["openvino"] = export_openvino(bundle_dir / FORMATS["onnx"], bundle_dir / FORMATS["openvino"])
        verified = {f: verify(bundle_dir / FORMATS[f], f, check, reference) for f in FORMATS}
    except Exception as exc:
        _remove(bundle_dir)
        raise ExportError(f"export of {bundle_dir} failed: {type(exc).__name__}: {exc}") from exc
    failed = {f: v for f, v in verified.items() if not v["passed"]}
    if failed:
        _remove(bundle_dir)
        raise ExportError(f"the exported graph does not match the Keras model, so none was kept: {failed}")
    return export_entries(bundle_dir, written, verified)


def with_exports(spec: BundleSpec, entries: list[dict[str, Any]]) -> BundleSpec:
    """``spec`` recording ``entries`` as its exports (``model_id`` unchanged: the weights are)."""
    return dataclasses.replace(spec, exports=tuple(entries))


def _pair(outputs: dict) -> tuple[np.ndarray, np.ndarray]:
    return outputs["probabilities"], outputs["features"]


def verification_images(spec: BundleSpec, data: Path | None) -> Verification:
    """Up to VERIFY_IMAGES decoded images: from ``data`` if given, else the bundle's test split
    (any of its training images without one), read again from the folder it was trained on."""
    if data is not None:
        if not Path(data).is_dir():
            raise InputError(f"--data must be a folder of images. Received: {data}")
        paths = [e.path for e in iter_files(data) if e.stat_error is None and e.size]
        source = f"images under {data}"
    else:
        trained_on = spec.training_dir
        if trained_on is None or not trained_on.is_dir():
            raise InputError(
                f"the bundle's training data ({trained_on}) is not here; give --data DIR to verify on"
            )
        try:
            samples = labelled_files(trained_on, "test", spec.labels, spec.extra)
            split = "test split"
            if not samples:  # trained without a test split: any of its images will do
                samples, split = labelled_files(trained_on, "all", spec.labels, spec.extra), "images"
        except DatasetError as exc:
            raise InputError(f"cannot read the bundle's test split: {exc}; give --data DIR") from exc
        paths = [fs_path(trained_on, s.relpath, s.relpath_bytes) for s in samples]
        source = f"the {split} of {trained_on}"
    return _checked(Verification(_decode(_every_nth(paths), spec), source))


def decoded_images(data: TrainingData, trained_on: str) -> Verification:
    """What :func:`verification_images` reads from the folder ``trained_on``, taken from the
    images training decoded from it: the same files, in the same order, none decoded again."""
    samples, split = data.index.splits["test"], "test split"
    if not samples:  # trained without a test split: any of its images will do
        samples, split = _walk_order(data.index.layout, data.index.splits), "images"
    decoded = {
        relpath: image
        for part in (data.train, data.val, data.test)
        for relpath, image in zip(part.relpaths, part.images, strict=True)
    }
    chosen = [decoded[s.relpath] for s in _every_nth(samples) if s.relpath in decoded]  # unreadable: skipped
    pixels = np.stack(chosen) if chosen else np.zeros((0,), np.uint8)
    return _checked(Verification(pixels, f"the {split} of {trained_on}"))


def _walk_order(layout: str, splits: dict[str, tuple[LabelledFile, ...]]) -> list[LabelledFile]:
    """Every sample in the order the walker lists the folder (``labelled_files(..., "all")``):
    the split folders in turn when presplit, then class by class, then names sorted per folder."""

    def key(s: LabelledFile) -> tuple:
        parts = (os.fsdecode(s.relpath_bytes) if s.relpath_bytes else s.relpath).split("/")
        folder = SPLIT_NAMES.index(parts[0]) if layout == "presplit" else 0
        return folder, s.label, parts

    return sorted((s for samples in splits.values() for s in samples), key=key)


def _every_nth(items: list) -> list:
    return items[:: max(1, len(items) // VERIFY_IMAGES)][:VERIFY_IMAGES]


def _checked(check: Verification) -> Verification:
    if len(check.pixels) == 0:
        raise InputError(f"no readable images in {check.source} to verify the export on")
    return check


def _decode(paths: list[str], spec: BundleSpec) -> np.ndarray:
    images = []
    for path in paths:
        try:
            images.append(load_image(path, spec.image_size, spec.color_mode).pixels)
        except Exception as exc:  # an unreadable verification image is skipped, not fatal
            log.debug("skipping %s for verification: %s", path, exc)
    return np.stack(images) if images else np.zeros((0,), np.uint8)


def verify(path: Path, runtime: str, check: Verification, reference: tuple) -> dict[str, Any]:
    """Run the exported graph on ``check``'s images with its runtime and compare with Keras' outputs."""
    from classify_job.classify.backends import load_graph

    pixels = check.pixels
    probs, features = _outputs(load_graph(path, runtime, threads=2).predict, pixels)
    ref, ref_features = reference
    ordered = np.sort(ref, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > TOLERANCE
    disagree = int(((probs.argmax(1) != ref.argmax(1)) & clear).sum())
    prob_diff = float(np.abs(probs - ref).max())
    return {
        "passed": prob_diff <= TOLERANCE and disagree == 0,
        "images": len(pixels),
        "source": check.source,
        "max_abs_prob_diff": prob_diff,
        "max_abs_feature_diff": float(np.abs(features - ref_features).max()),
        "top1_disagreements": disagree,
        "tolerance": TOLERANCE,
    }


def _outputs(predict: Any, pixels: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    parts = [predict(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    return tuple(np.concatenate([np.asarray(p[k], np.float32) for p in parts]) for k in (0, 1))


def export_entries(
    bundle_dir: Path, written: dict[str, dict[str, Any]], verified: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One ``exports`` entry per format: its files' SHA-256, what the exporter reported
    (``written``), the library versions and its verification."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return [
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


def _remove(bundle_dir: Path) -> None:
    """No export is better than one that was not checked: remove every exported file."""
    for name in EXPORT_FILES:
        (bundle_dir / name).unlink(missing_ok=True)
