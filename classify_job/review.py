"""Which predictions a person should check, and the streaming helpers to find them.

A prediction needs review when its confidence is under ``threshold`` or its two most probable
labels are less than ``margin`` apart. Shared by catalog tagging and the HTML report.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classify_job.errors import InputError
from classify_job.sink import list_parts, prob_column

LOW_CONFIDENCE = "low confidence"
CLOSE_CALL = "top two close"
_PROB_PREFIX = prob_column("")


def iter_prediction_batches(out: Path, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Stream ``columns`` plus every ``prob_<label>`` column of each committed part.

    Each part is asked for its own probability columns, so parts written by models with
    different label sets can still be read together.
    """
    for part in list_parts(out):
        file = pq.ParquetFile(part)
        probs = [name for name in file.schema_arrow.names if name.startswith(_PROB_PREFIX)]
        yield from file.iter_batches(columns=[*columns, *probs], batch_size=65536)


def prob_matrix(batch: pa.RecordBatch) -> tuple[list[str], np.ndarray]:
    """The batch's labels and its probabilities as a float32 (rows, labels) array; NaN on error rows."""
    names = [name for name in batch.schema.names if name.startswith(_PROB_PREFIX)]
    columns = [batch.column(name).to_numpy(zero_copy_only=False) for name in names]
    matrix = np.column_stack(columns) if columns else np.zeros((batch.num_rows, 0))
    return [name.removeprefix(_PROB_PREFIX) for name in names], matrix.astype(np.float32)


def top_two_margin(probs: np.ndarray) -> np.ndarray:
    """Difference between each row's two largest probabilities (NaN where the row is NaN)."""
    if probs.shape[1] < 2:
        return np.full(len(probs), np.nan, dtype=np.float32)
    top_two = np.partition(probs, -2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def review_reasons(
    confidence: np.ndarray, margin: np.ndarray, threshold: float, min_margin: float
) -> np.ndarray:
    """Why each prediction needs review: ``""`` when it does not (NaN never needs review)."""
    low = np.asarray(confidence) < threshold
    close = np.asarray(margin) < min_margin
    both = f"{LOW_CONFIDENCE}; {CLOSE_CALL}"
    return np.where(low & close, both, np.where(low, LOW_CONFIDENCE, np.where(close, CLOSE_CALL, "")))


def check_review_settings(threshold: float, margin: float) -> None:
    """Reject a threshold or margin outside 0..1 with an InputError."""
    for name, value in (("threshold", threshold), ("margin", margin)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"--{name} must be between 0 and 1. Received: {value}")
