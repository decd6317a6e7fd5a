"""The Parquet contract of an output directory: the schema, where parts live, how to read them.

``OUT/predictions/part-*.parquet`` holds one row per file. Every reader (resume, summary, report,
tagging, merge) goes through :func:`iter_batches`, which asks each part only for the columns it
has, so parts written by different models (different ``prob_<label>`` columns) read together.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classify_job.errors import InputError

PREDICTIONS_DIR = "predictions"
PART_GLOB = "part-*.parquet"
METADATA_KEY = b"classify_job"
TIMESTAMP = pa.timestamp("us", tz="UTC")  # microseconds: what Spark and DuckDB read natively
PROB_PREFIX = "prob_"
READ_BATCH_ROWS = 65536


def prob_column(label: str) -> str:
    return f"{PROB_PREFIX}{label}"


def predictions_schema(labels: Sequence[str]) -> pa.Schema:
    """The output contract: fixed columns plus one ``prob_<label>`` column per class."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("relpath", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float32()),
        *(pa.field(prob_column(label), pa.float32()) for label in labels),
        pa.field("top_labels", pa.list_(pa.string())),
        pa.field("top_probs", pa.list_(pa.float32())),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("mtime", TIMESTAMP, nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("classified_at", TIMESTAMP, nullable=False),
    ]
    return pa.schema(fields)


def list_parts(out: Path) -> list[Path]:
    """Committed part files in commit order (names start with the sortable run id)."""
    return sorted((Path(out) / PREDICTIONS_DIR).glob(PART_GLOB))


def require_predictions(out: Path) -> list[Path]:
    """The committed parts of ``out``; an InputError when there are none."""
    parts = list_parts(out)
    if not parts:
        raise InputError(f"no predictions found under {out}; run `classify-job classify` first")
    return parts


def read_part_metadata(part: Path) -> dict[str, Any]:
    """The run facts stored in a part file's footer (run id, start time, model, tree, shard)."""
    meta = pq.read_schema(part).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def iter_batches(
    out: Path, columns: Sequence[str], probs: bool = False, parts: Sequence[Path] | None = None
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream ``columns`` (plus each part's own ``prob_<label>`` columns with ``probs``) of every
    committed part, or of ``parts``, batch by batch: memory stays flat however large OUT is."""
    for part in list_parts(out) if parts is None else parts:
        file = pq.ParquetFile(part)
        names = list(columns)
        if probs:
            names += [name for name in file.schema_arrow.names if name.startswith(PROB_PREFIX)]
        for batch in file.iter_batches(columns=names, batch_size=READ_BATCH_ROWS):
            yield part, batch


def prob_matrix(batch: pa.RecordBatch) -> tuple[list[str], np.ndarray]:
    """The batch's labels and its probabilities as a float32 (rows, labels) array; NaN on error rows."""
    names = [name for name in batch.schema.names if name.startswith(PROB_PREFIX)]
    columns = [batch.column(name).to_numpy(zero_copy_only=False) for name in names]
    matrix = np.column_stack(columns) if columns else np.zeros((batch.num_rows, 0))
    return [name.removeprefix(PROB_PREFIX) for name in names], matrix.astype(np.float32)
