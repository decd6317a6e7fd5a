"""The Parquet contract of an output directory: the schema and its versions, where parts live,
how to read them.

``OUT/predictions/part-*.parquet`` holds one row per file. Every reader (resume, summary, report,
tagging, merge) goes through :func:`iter_batches`, which asks each part only for the columns it
has and fills the rest with nulls, so parts written by different models (different
``prob_<label>`` columns) or by earlier versions (fewer columns) read as one dataset. Columns a
version adds are nullable; a classify run rewrites older parts to the current schema under its
lock (:func:`upgrade_part`), so pandas and DuckDB, which take the columns from one file, see
every column in every part.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classify_job.atomic import atomic_path
from classify_job.errors import InputError

PREDICTIONS_DIR = "predictions"
PART_GLOB = "part-*.parquet"
METADATA_KEY = b"classify_job"
TIMESTAMP = pa.timestamp("us", tz="UTC")  # microseconds: what Spark and DuckDB read natively
PROB_PREFIX = "prob_"
READ_BATCH_ROWS = 65536


def prob_column(label: str) -> str:
    return f"{PROB_PREFIX}{label}"


# 1: the first release. 2: relpath_bytes. 3: calibrated confidences and a decision per row
# (raw_confidence, raw_probs, unfamiliar_score, decision, review_reason, calibration_id).
SCHEMA_VERSION = 3


def predictions_schema(labels: Sequence[str]) -> pa.Schema:
    """The output contract: fixed columns plus one ``prob_<label>`` column per class."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("relpath", pa.string(), nullable=False),
        pa.field("relpath_bytes", pa.binary()),  # the raw name, when relpath had to be escaped
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float32()),
        *(pa.field(prob_column(label), pa.float32()) for label in labels),
        pa.field("top_labels", pa.list_(pa.string())),
        pa.field("top_probs", pa.list_(pa.float32())),
        pa.field("raw_confidence", pa.float32()),  # before calibration
        pa.field("raw_probs", pa.list_(pa.float32())),  # before calibration, in label order
        pa.field("unfamiliar_score", pa.float32()),
        pa.field("decision", pa.string()),  # accept or review; null on error rows
        pa.field("review_reason", pa.string()),  # null when accepted
        pa.field("calibration_id", pa.string()),  # null: the bundle had no calibration
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("mtime", TIMESTAMP, nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("classified_at", TIMESTAMP, nullable=False),
    ]
    return pa.schema(fields)


FIXED_FIELDS = {f.name: f for f in predictions_schema(())}


def labels_of(schema: pa.Schema) -> list[str]:
    """The labels whose ``prob_<label>`` columns a part has, in column order."""
    return [name.removeprefix(PROB_PREFIX) for name in schema.names if name.startswith(PROB_PREFIX)]


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
    return _facts(pq.read_schema(part))


def _facts(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def schema_version(schema: pa.Schema) -> int:
    """The schema version a part was written with (1 for parts from before versions were kept)."""
    return int(_facts(schema).get("schema_version", 1))


def with_facts(schema: pa.Schema, facts: dict[str, Any]) -> pa.Schema:
    """``schema`` carrying ``facts`` (and the current schema version) in its footer metadata."""
    return schema.with_metadata({METADATA_KEY: json.dumps({**facts, "schema_version": SCHEMA_VERSION})})


def upgrade_part(part: Path) -> bool:
    """Rewrite ``part`` to the current schema (new columns null) if it is older; True if it was.

    Call only while holding the output lock: the part is replaced by rename.
    """
    file = pq.ParquetFile(part)
    if schema_version(file.schema_arrow) >= SCHEMA_VERSION:
        return False
    table = file.read()
    target = predictions_schema(labels_of(table.schema))
    columns = [
        table.column(f.name) if f.name in table.schema.names else pa.nulls(len(table), f.type) for f in target
    ]
    upgraded = pa.Table.from_arrays(columns, schema=with_facts(target, _facts(table.schema)))
    with atomic_path(part) as tmp:
        pq.write_table(upgraded, tmp, compression="zstd")
    return True


def iter_batches(
    out: Path, columns: Sequence[str], probs: bool = False, parts: Sequence[Path] | None = None
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream ``columns`` (plus each part's own ``prob_<label>`` columns with ``probs``) of every
    committed part, or of ``parts``, batch by batch: memory stays flat however large OUT is."""
    for part in list_parts(out) if parts is None else parts:
        file = pq.ParquetFile(part)
        present = set(file.schema_arrow.names)
        missing = [name for name in columns if name not in present]
        names = [name for name in columns if name in present]
        if probs:
            names += [f"{PROB_PREFIX}{label}" for label in labels_of(file.schema_arrow)]
        for batch in file.iter_batches(columns=names, batch_size=READ_BATCH_ROWS):
            for name in missing:  # a column added after this part was written
                batch = batch.append_column(
                    FIXED_FIELDS[name], pa.nulls(batch.num_rows, FIXED_FIELDS[name].type)
                )
            yield part, batch


def prob_matrix(batch: pa.RecordBatch) -> tuple[list[str], np.ndarray]:
    """The batch's labels and its probabilities as a float32 (rows, labels) array; NaN on error rows."""
    names = [name for name in batch.schema.names if name.startswith(PROB_PREFIX)]
    columns = [batch.column(name).to_numpy(zero_copy_only=False) for name in names]
    matrix = np.column_stack(columns) if columns else np.zeros((batch.num_rows, 0))
    return [name.removeprefix(PROB_PREFIX) for name in names], matrix.astype(np.float32)
