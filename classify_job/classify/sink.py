"""Writing predictions: rows built from decoded batches, and rolling part files committed by rename.

Rows go into ``OUT/predictions/.part-*.parquet.tmp`` one row group per batch; a part is renamed
to ``part-*.parquet`` once closed, so readers (pandas, DuckDB, Spark), which skip dot-files, only
ever see complete files. A crash loses at most the open part, which the next run redoes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classify_job.classify.index import PartIndex, index_rows, write_index
from classify_job.errors import OutputError
from classify_job.predictions import PREDICTIONS_DIR, TIMESTAMP, prob_column, with_facts
from classify_job.walk import display_path


def remove_stale_temp_files(out: Path) -> int:
    """Delete half-written parts a crashed run left behind; call only while holding the lock."""
    stale = list((out / PREDICTIONS_DIR).glob(".part-*.tmp*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


@dataclass
class PartWriter:
    """Appends row groups to a part file and commits it every ``rows_per_part`` rows or
    ``commit_every_s`` seconds, so a long run keeps its progress visible and safe. Each committed
    part is indexed at once (:mod:`classify_job.classify.index`), from the rows in hand."""

    out: Path
    schema: pa.Schema
    run_id: str
    run_facts: dict[str, Any]
    rows_per_part: int = 10_000
    commit_every_s: float = 120.0
    _seq: int = 0
    _writer: pq.ParquetWriter | None = None
    _tmp: Path | None = None
    _rows: int = 0
    _opened_at: float = 0.0
    _index_rows: list[np.ndarray] = field(default_factory=list)
    indexes: list[PartIndex] = field(default_factory=list)

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._open()
        self._writer.write_table(table)
        self._index_rows.append(index_rows(table))
        self._rows += table.num_rows
        if self._rows >= self.rows_per_part or time.monotonic() - self._opened_at >= self.commit_every_s:
            self.commit()

    def commit(self) -> None:
        """Close the open part and rename it into the dataset; a no-op when nothing is open."""
        if self._writer is None:
            return
        self._writer.close()
        final = self._tmp.with_name(self._tmp.name[1:].removesuffix(".tmp"))
        os.replace(self._tmp, final)
        self.indexes.append(write_index(final, np.concatenate(self._index_rows)))
        self._writer, self._tmp, self._rows, self._index_rows = None, None, 0, []

    def _open(self) -> None:
        directory = self.out / PREDICTIONS_DIR
        self._tmp = directory / f".part-{self.run_id}-{self._seq:05d}.parquet.tmp"
        self._seq += 1
        facts = {**self.run_facts, "run_id": self.run_id, "part_opened_at": time.time()}
        schema = with_facts(self.schema, facts)
        try:
            self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        except OSError as exc:
            raise OutputError(f"cannot write to {directory}: {exc}") from exc
        self._opened_at = time.monotonic()


@dataclass(frozen=True)
class RowContext:
    """Values shared by every row of one run."""

    labels: tuple[str, ...]
    model_id: str
    run_id: str
    top_k: int


def predictions_table(decoded: Sequence, probs: np.ndarray, ctx: RowContext, schema: pa.Schema) -> pa.Table:
    """One row per decoded file. ``probs`` holds a row for each *successfully* decoded file,
    in order; failed files become ``status="error"`` rows with null predictions."""
    ok = np.array([d.image is not None for d in decoded], dtype=bool)
    full = np.full((len(decoded), len(ctx.labels)), np.nan, dtype=np.float32)
    full[ok] = probs
    columns = {**_file_columns(decoded, ok), **_prediction_columns(full, ok, ctx), **_run_columns(ctx, ok)}
    return pa.Table.from_pydict(columns, schema=schema)


def _file_columns(decoded: Sequence, ok: np.ndarray) -> dict[str, Any]:
    return {
        "path": [display_path(d.entry.path) for d in decoded],
        "relpath": [d.entry.relpath for d in decoded],
        "relpath_bytes": [d.entry.relpath_bytes for d in decoded],
        "status": np.where(ok, "ok", "error").tolist(),
        "error": [d.error for d in decoded],
        "bytes": [d.entry.size for d in decoded],
        "mtime": pa.array([d.entry.mtime_ns // 1000 for d in decoded], TIMESTAMP),
        "width": [d.image.width if d.image else None for d in decoded],
        "height": [d.image.height if d.image else None for d in decoded],
    }


def _prediction_columns(full: np.ndarray, ok: np.ndarray, ctx: RowContext) -> dict[str, Any]:
    labels = np.asarray(ctx.labels, dtype=object)
    top = np.argsort(-full, axis=1, kind="stable")[:, : min(ctx.top_k, len(labels))]
    top_probs = np.take_along_axis(full, top, axis=1)
    return {
        "label": pa.array(labels[top[:, 0]], pa.string(), mask=~ok),
        "confidence": pa.array(top_probs[:, 0], pa.float32(), mask=~ok),
        **{prob_column(lab): pa.array(full[:, i], pa.float32(), mask=~ok) for i, lab in enumerate(labels)},
        "top_labels": [list(row) if good else None for row, good in zip(labels[top], ok, strict=True)],
        "top_probs": [row.tolist() if good else None for row, good in zip(top_probs, ok, strict=True)],
    }


def _run_columns(ctx: RowContext, ok: np.ndarray) -> dict[str, Any]:
    n = len(ok)
    return {
        "model_id": [ctx.model_id] * n,
        "run_id": [ctx.run_id] * n,
        "classified_at": pa.array(np.full(n, int(time.time() * 1e6)), TIMESTAMP),
    }
