"""The Keras-on-JAX runtime: the bundle's own model, with the fast layers, compiled by XLA.

Always available, and the reference the exported runtimes are checked against.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from classify_job.bundle import BundleSpec


class KerasBackend:
    """uint8 batches in; probabilities and features out. Batches are padded to one fixed size,
    so the model is compiled once (and the compilation is cached across runs)."""

    name = "keras"

    def __init__(self, bundle: Path, spec: BundleSpec, batch_size: int) -> None:
        from classify_job.bundle import load_bundle
        from classify_job.nets.inference import FEATURES, PROBABILITIES, inference_model

        self.model = inference_model(load_bundle(bundle, spec).model)
        self.outputs = (PROBABILITIES, FEATURES)
        self.batch_size = batch_size
        self._padded = np.zeros((batch_size, *self.model.input_shape[1:]), np.uint8)

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(pixels)
        if n < self.batch_size:
            self._padded[:n] = pixels
            pixels = self._padded
        out = self.model.predict_on_batch(pixels)
        return tuple(np.asarray(out[name], np.float32)[:n] for name in self.outputs)
