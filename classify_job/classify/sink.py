"""Rolling Parquet part files, committed by rename and indexed as they are committed.

Rows go into ``OUT/predictions/.part-*.parquet.tmp`` one row group per batch; a part is renamed
to ``part-*.parquet`` once closed, so readers (pandas, DuckDB, Spark), which skip dot-files, only
ever see complete files. A crash loses at most the open part, which the next run redoes.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classify_job.classify.index import PartIndex, index_rows, write_index
from classify_job.errors import OutputError
from classify_job.predictions import PREDICTIONS_DIR, with_facts


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


class BackgroundWriter:
    """Turns items into tables and writes them on a thread of its own, so the next batch is
    decoded and predicted meanwhile. At most ``depth`` items wait; an error in the thread is
    raised by the next :meth:`put` or by :meth:`close`."""

    def __init__(self, write: Callable[[Any], None], depth: int = 2) -> None:
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rows", daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        self._raise_error()
        self._queue.put(item)

    def close(self) -> None:
        """Write everything queued, stop the thread, and raise its error if it had one."""
        self._queue.put(None)
        self._thread.join()
        self._raise_error()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
