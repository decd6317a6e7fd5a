"""Prediction rows: one Arrow table per decoded batch, built column by column in NumPy/Arrow.

Failed files become ``status="error"`` rows with null predictions; nothing here loops over rows
in Python except to read each file's own facts (path, size, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from classify_job.classify.decode import DecodedBatch
from classify_job.predictions import TIMESTAMP, prob_column
from classify_job.walk import display_path


@dataclass(frozen=True)
class RowContext:
    """Values shared by every row of one run."""

    labels: tuple[str, ...]
    model_id: str
    run_id: str
    top_k: int


def predictions_table(batch: DecodedBatch, probs: np.ndarray, ctx: RowContext, schema: pa.Schema) -> pa.Table:
    """One row per file of ``batch``; ``probs`` has a row per file (rows of failed files are ignored)."""
    ok = batch.ok
    columns = {
        **_file_columns(batch, ok),
        **_prediction_columns(probs, ok, ctx),
        **_run_columns(ctx, len(ok)),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def _file_columns(batch: DecodedBatch, ok: np.ndarray) -> dict[str, pa.Array | list]:
    entries = batch.entries
    sizes = np.array([s or (0, 0) for s in batch.sizes], dtype=np.int32).reshape(-1, 2)
    return {
        "path": [display_path(e.path) for e in entries],
        "relpath": [e.relpath for e in entries],
        "relpath_bytes": [e.relpath_bytes for e in entries],
        "status": pa.DictionaryArray.from_arrays(
            pa.array(np.where(ok, 0, 1), pa.int8()), ["ok", "error"]
        ).cast(pa.string()),
        "error": batch.errors,
        "bytes": np.fromiter((e.size for e in entries), np.int64, len(entries)),
        "mtime": pa.array(
            np.fromiter((e.mtime_ns // 1000 for e in entries), np.int64, len(entries)), TIMESTAMP
        ),
        "width": pa.array(sizes[:, 0], pa.int32(), mask=~ok),
        "height": pa.array(sizes[:, 1], pa.int32(), mask=~ok),
    }


def _prediction_columns(probs: np.ndarray, ok: np.ndarray, ctx: RowContext) -> dict[str, pa.Array]:
    probs = np.asarray(probs, dtype=np.float32)
    k = min(ctx.top_k, len(ctx.labels))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top_probs = np.take_along_axis(probs, top, axis=1)
    labels = pa.array(ctx.labels, pa.string())
    offsets = pa.array(np.arange(0, len(ok) * k + 1, k, dtype=np.int32))
    null = pa.array(~ok)
    return {
        "label": pc.if_else(null, pa.scalar(None, pa.string()), labels.take(pa.array(top[:, 0]))),
        "confidence": pa.array(top_probs[:, 0], pa.float32(), mask=~ok),
        **{
            prob_column(lab): pa.array(probs[:, i], pa.float32(), mask=~ok)
            for i, lab in enumerate(ctx.labels)
        },
        "top_labels": pa.ListArray.from_arrays(offsets, labels.take(pa.array(top.ravel())), mask=null),
        "top_probs": pa.ListArray.from_arrays(offsets, pa.array(top_probs.ravel(), pa.float32()), mask=null),
    }


def _run_columns(ctx: RowContext, n: int) -> dict[str, pa.Array]:
    return {
        "model_id": pa.repeat(pa.scalar(ctx.model_id), n) if n else pa.array([], pa.string()),
        "run_id": pa.repeat(pa.scalar(ctx.run_id), n) if n else pa.array([], pa.string()),
        "classified_at": pa.array(np.full(n, int(time.time() * 1e6)), TIMESTAMP),
    }
