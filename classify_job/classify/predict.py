"""Batched inference overlapped with decoding.

A thread pool decodes the next batches (Pillow releases the GIL) while the model runs on the
current one. Batches are padded to a fixed size so the compiled model is traced once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import pyarrow as pa

from classify_job.bundle import Bundle
from classify_job.classify.sink import RowContext, predictions_table
from classify_job.errors import ImageDecodeError
from classify_job.imageio import DecodedImage, load_image
from classify_job.walk import FileEntry


@dataclass(frozen=True)
class Decoded:
    """One file after decoding: either an image or the reason it failed."""

    entry: FileEntry
    image: DecodedImage | None
    error: str | None


class Classifier:
    """Wraps a bundle's model: uint8 pixels in, class probabilities out, fixed batch shape."""

    def __init__(self, bundle: Bundle, batch_size: int):
        self.bundle = bundle
        self.batch_size = batch_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.spec.labels

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities, shape (n, classes), for ``pixels`` of shape (n, h, w, c) with n <= batch."""
        probs = self.bundle.model.predict_on_batch(pad_batch(pixels, self.batch_size))
        return np.asarray(probs, dtype=np.float32)[: len(pixels)]

    def predict_decoded(self, batch: list[Decoded]) -> np.ndarray:
        """Probabilities for the files of ``batch`` that decoded, in order."""
        images = [d.image.pixels for d in batch if d.image is not None]
        if not images:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        return self.predict(np.stack(images))


def classify_entries(
    entries: Iterable[FileEntry], classifier: Classifier, ctx: RowContext, schema: pa.Schema, workers: int
) -> Iterator[pa.Table]:
    """Prediction rows for ``entries``, one table per batch, decoding overlapped with inference."""
    spec = classifier.bundle.spec
    for batch in iter_decoded_batches(
        entries, spec.image_size, spec.color_mode, classifier.batch_size, workers
    ):
        yield predictions_table(batch, classifier.predict_decoded(batch), ctx, schema)


def pad_batch(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` as float32, zero-padded to ``size`` rows so a compiled model keeps one shape."""
    batch = np.zeros((size, *pixels.shape[1:]), dtype=np.float32)
    batch[: len(pixels)] = pixels
    return batch


def decode_entry(entry: FileEntry, size: tuple[int, int], color_mode: str) -> Decoded:
    """Decode one file; any failure becomes a reason string, never an exception."""
    if entry.stat_error:
        return Decoded(entry, None, entry.stat_error)
    if entry.size == 0:
        return Decoded(entry, None, "empty file")
    try:
        return Decoded(entry, load_image(entry.path, size, color_mode), None)
    except ImageDecodeError as exc:
        return Decoded(entry, None, str(exc))


def iter_decoded_batches(
    entries: Iterable[FileEntry],
    size: tuple[int, int],
    color_mode: str,
    batch_size: int,
    workers: int,
    prefetch: int = 2,
) -> Iterator[list[Decoded]]:
    """Yield decoded batches in walk order while up to ``prefetch`` later batches decode."""
    entries = iter(entries)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[list[Future]] = deque()
        while chunk := list(islice(entries, batch_size)):
            pending.append([pool.submit(decode_entry, e, size, color_mode) for e in chunk])
            if len(pending) > prefetch:
                yield [f.result() for f in pending.popleft()]
        while pending:
            yield [f.result() for f in pending.popleft()]
