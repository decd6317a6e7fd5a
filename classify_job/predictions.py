"""The Parquet contract of an output directory: the schema and its versions, where parts live,
how to read them.

``OUT/predictions/part-*.parquet`` holds one row per file. Every reader (resume, summary, report,
tagging, merge) goes through :func:`iter_batches`, which asks each part only for the columns it
has and fills the rest with nulls, so parts written by different models (different
``prob_<label>`` columns) or by earlier versions (fewer columns) read as one dataset. Columns a
version adds are nullable; a classify run rewrites older parts to the current schema under its
lock (:func:`upgrade_part`), so pandas and DuckDB, which take the columns from one file, see
every column in every part.

``predictions/`` holds committed parts and nothing else, so any reader may take the folder whole.
Parts are written under ``OUT/.tmp/`` (same file system), synced, and renamed in
(:func:`write_part`, :func:`commit_file`); a part that cannot be read (:func:`check_part`) is
moved to ``OUT/quarantine/`` by a classify run, never deleted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from classify_job.errors import InputError, OutputError

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
TMP_DIR = ".tmp"  # parts being written or rewritten: outside predictions/, on the same file system
QUARANTINE_DIR = "quarantine"  # parts that could not be read, kept for a person to look at
PART_GLOB = "part-*.parquet"
METADATA_KEY = b"classify_job"
TIMESTAMP = pa.timestamp("us", tz="UTC")  # microseconds: what Spark and DuckDB read natively
PROB_PREFIX = "prob_"
READ_BATCH_ROWS = 65536


def prob_column(label: str) -> str:
    return f"{PROB_PREFIX}{label}"


# 1: the first release. 2: relpath_bytes. 3: calibrated confidences and a decision per row
# (raw_confidence, raw_probs, unfamiliar_score, decision, review_reason, calibration_id).
# 4: attribute-level decisions (attr_<name>, attr_<name>_confidence, attr_<name>_decision), nullable,
# present when the bundle decides attributes.
SCHEMA_VERSION = 4
ATTR_PREFIX, ATTR_DECISION = "attr_", "_decision"


def attribute_fields(name: str) -> list[pa.Field]:
    """One attribute's columns: its value, that value's probability, accept or review."""
    return [
        pa.field(f"{ATTR_PREFIX}{name}", pa.string()),
        pa.field(f"{ATTR_PREFIX}{name}_confidence", pa.float32()),
        pa.field(f"{ATTR_PREFIX}{name}{ATTR_DECISION}", pa.string()),
    ]


def predictions_schema(labels: Sequence[str], attributes: Sequence[str] = ()) -> pa.Schema:
    """The output contract: fixed columns plus one ``prob_<label>`` column per class and three
    ``attr_<name>*`` columns per attribute the bundle decides."""
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
        *(f for name in attributes for f in attribute_fields(name)),
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


def attributes_of(schema: pa.Schema | Sequence[str]) -> list[str]:
    """The attributes whose ``attr_<name>*`` columns a part (or a list of column names) has."""
    return [
        name.removeprefix(ATTR_PREFIX).removesuffix(ATTR_DECISION)
        for name in (schema.names if isinstance(schema, pa.Schema) else map(str, schema))
        if name.startswith(ATTR_PREFIX) and name.endswith(ATTR_DECISION)
    ]


def attribute_column_names(schema: pa.Schema) -> list[str]:
    """Every ``attr_*`` column of a part."""
    return [f.name for name in attributes_of(schema) for f in attribute_fields(name)]


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
    """What a part file's footer says of its run (run id, start time, model, tree, shard)."""
    try:
        return _footer(pq.read_schema(part))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UnreadablePart(part, exc) from exc


def _footer(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def schema_version(schema: pa.Schema) -> int:
    """The schema version a part was written with (1 for parts from before versions were kept)."""
    return int(_footer(schema).get("schema_version", 1))


def with_footer(schema: pa.Schema, footer: dict[str, Any]) -> pa.Schema:
    """``schema`` carrying ``footer`` (and the current schema version) in its footer metadata."""
    return schema.with_metadata({METADATA_KEY: json.dumps({**footer, "schema_version": SCHEMA_VERSION})})


def upgrade_part(part: Path) -> bool:
    """Rewrite ``part`` to the current schema (new columns null) if it is older; True if it was.

    Call only while holding the output lock: the part is replaced by rename.
    """
    file = pq.ParquetFile(part)
    if schema_version(file.schema_arrow) >= SCHEMA_VERSION:
        return False
    table = read_part(part)
    target = predictions_schema(labels_of(table.schema), attributes_of(table.schema))
    columns = [
        table.column(f.name) if f.name in table.schema.names else pa.nulls(len(table), f.type) for f in target
    ]
    upgraded = pa.Table.from_arrays(columns, schema=with_footer(target, _footer(table.schema)))
    write_part(part, upgraded)
    return True


class UnreadablePart(InputError):
    """A committed part whose bytes are not a readable Parquet file (truncated, bad footer or magic)."""

    def __init__(self, part: Path, reason: object) -> None:
        super().__init__(
            f"{part} is unreadable ({reason}); run `classify-job classify` on this output again: "
            f"it moves the part to {QUARANTINE_DIR}/ and classifies its files again"
        )
        self.part = part
        self.reason = str(reason)


def check_part(part: Path) -> pq.FileMetaData:
    """The footer of ``part``, having checked both magic numbers and that the footer parses: what
    a reader needs, for the price of one small read per part. UnreadablePart otherwise."""
    try:
        with open(part, "rb") as file:
            head = file.read(4)
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(size - 8, 0))
            tail = file.read(8)
            if size < 12 or head != b"PAR1" or tail[4:] != b"PAR1":
                raise UnreadablePart(part, f"no Parquet magic bytes ({size} bytes)")
            if int.from_bytes(tail[:4], "little") > size - 12:
                raise UnreadablePart(part, "footer length beyond the file")
            file.seek(0)
            return pq.read_metadata(file)
    except (OSError, ValueError, pa.ArrowException) as exc:  # ArrowInvalid is a ValueError
        raise UnreadablePart(part, exc) from exc


def read_part(part: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """``part`` (or some of its columns) as a table; UnreadablePart when its pages are damaged."""
    try:
        return pq.read_table(part, columns=None if columns is None else list(columns))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UnreadablePart(part, exc) from exc


def fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable (a rename is only as safe as its directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Make the closed file ``path``'s bytes durable before a rename makes it visible."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp: Path, final: Path) -> None:
    """Sync the closed file ``tmp``, rename it to ``final`` and sync ``final``'s directory; an
    OSError (a full disk, a read-only file system) becomes an OutputError and ``tmp`` goes."""
    try:
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot commit {final}: {exc.strerror or exc}") from exc


def out_of(part: Path) -> Path:
    """The output directory a part (committed, or staged by merge) belongs to."""
    return part.parent.parent


def write_part(part: Path, table: pa.Table) -> None:
    """Write ``table`` as ``part`` whole or not at all: under ``OUT/.tmp/``, synced, renamed in."""
    tmp = out_of(part) / TMP_DIR / part.name
    try:
        tmp.parent.mkdir(exist_ok=True)
        pq.write_table(table, tmp, compression="zstd")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {part}: {exc.strerror or exc}") from exc
    commit_file(tmp, part)


def delete_part(part: Path) -> None:
    """Remove a committed part (one that holds no rows); an OSError is an OutputError."""
    try:
        part.unlink(missing_ok=True)
        fsync_dir(part.parent)
    except OSError as exc:
        raise OutputError(f"cannot remove {part}: {exc.strerror or exc}") from exc


def quarantine_part(part: Path, reason: str) -> Path:
    """Move an unreadable part to ``OUT/quarantine/`` (a warning says so); returns its new path."""
    directory = out_of(part) / QUARANTINE_DIR
    target = directory / part.name
    try:
        directory.mkdir(exist_ok=True)
        n = 1
        while target.exists():
            target, n = directory / f"{part.stem}.{n}{part.suffix}", n + 1
        os.replace(part, target)
        fsync_dir(part.parent)
    except OSError as exc:
        raise OutputError(f"cannot move unreadable {part} to {directory}: {exc.strerror or exc}") from exc
    log.warning("moved unreadable %s to %s (%s); its files will be classified again", part, target, reason)
    return target


def quarantined_parts(out: Path) -> int:
    """How many parts wait in ``OUT/quarantine/`` for a person to look at (or delete)."""
    directory = Path(out) / QUARANTINE_DIR
    return sum(1 for _ in directory.glob("*.parquet")) if directory.is_dir() else 0


def iter_batches(
    out: Path,
    columns: Sequence[str],
    probs: bool = False,
    parts: Sequence[Path] | None = None,
    attributes: bool = False,
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream ``columns`` (plus each part's own ``prob_<label>`` columns with ``probs``, and its
    ``attr_*`` columns with ``attributes``) of every committed part, or of ``parts``, batch by
    batch: memory stays flat however large OUT is."""
    for part in list_parts(out) if parts is None else parts:
        yield from _part_batches(part, columns, probs, attributes)


def _part_batches(
    part: Path, columns: Sequence[str], probs: bool, attributes: bool = False
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    try:
        file = pq.ParquetFile(part)
        present = set(file.schema_arrow.names)
        missing = [name for name in columns if name not in present]
        names = [name for name in columns if name in present]
        if probs:
            names += [f"{PROB_PREFIX}{label}" for label in labels_of(file.schema_arrow)]
        if attributes:
            names += attribute_column_names(file.schema_arrow)
        for batch in file.iter_batches(columns=names, batch_size=READ_BATCH_ROWS):
            for name in missing:  # a column added after this part was written
                batch = batch.append_column(
                    FIXED_FIELDS[name], pa.nulls(batch.num_rows, FIXED_FIELDS[name].type)
                )
            yield part, batch
    except (OSError, ValueError, pa.ArrowException) as exc:  # damaged since it was committed
        raise UnreadablePart(part, exc) from exc


def prob_matrix(batch: pa.RecordBatch) -> tuple[list[str], np.ndarray]:
    """The batch's labels and its probabilities as a float32 (rows, labels) array; NaN on error rows."""
    names = [name for name in batch.schema.names if name.startswith(PROB_PREFIX)]
    columns = [batch.column(name).to_numpy(zero_copy_only=False) for name in names]
    matrix = np.column_stack(columns) if columns else np.zeros((batch.num_rows, 0))
    return [name.removeprefix(PROB_PREFIX) for name in names], matrix.astype(np.float32)


def value_counts(column: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """How many times each non-null value occurs in ``column``."""
    return {item["values"]: item["counts"] for item in pc.value_counts(column.drop_null()).to_pylist()}
