"""Batched inference overlapped with decoding: decoded batches in, (batch, probabilities,
features) out, in walk order. The back-end sees each decoded buffer as it is."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from classify_job.bundle import BundleSpec
from classify_job.classify.backends import Backend
from classify_job.classify.decode import DecodedBatch, decoded_batches
from classify_job.walk import FileEntry


@dataclass(frozen=True)
class Predictions:
    """A decoded batch and the model's outputs for each of its rows (rows of failed files are
    whatever the model made of stale pixels, and are ignored)."""

    batch: DecodedBatch
    probs: np.ndarray
    features: np.ndarray | None


def predict_batches(
    entries: Iterable[FileEntry], backend: Backend, spec: BundleSpec, batch_size: int, workers: int
) -> Iterator[Predictions]:
    """Decode ``entries`` ahead with ``workers`` threads and run ``backend`` on each batch."""
    for batch in decoded_batches(entries, spec.image_size, spec.color_mode, batch_size, workers):
        if batch.ok.any():
            probs, features = backend.predict(batch.pixels)
        else:  # nothing decoded: no model call
            probs, features = np.full((len(batch.entries), len(spec.labels)), np.nan, np.float32), None
        yield Predictions(batch, probs, features)
