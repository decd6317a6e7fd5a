"""Rolling Parquet part files, committed by rename and indexed as they are committed.

Rows go into ``OUT/.tmp/part-*.parquet`` one row group per batch, outside ``predictions/``; a
part is closed, synced, renamed into ``predictions/`` and its directory synced, then indexed
(:mod:`classify_job.classify.index`). So ``predictions/`` only ever holds whole parts, whatever
stops the run: a crash or ``kill -9`` loses at most the open part, and a failed write (a full
disk) is an OutputError that discards the open part. The next run redoes what was not committed.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classify_job.classify.index import PartIndex, index_rows, write_index
from classify_job.errors import OutputError
from classify_job.predictions import PREDICTIONS_DIR, TMP_DIR, commit_file, with_footer

log = logging.getLogger(__name__)


def remove_stale_temp_files(out: Path) -> int:
    """Delete half-written parts a crashed run left behind (in ``OUT/.tmp/``, and the
    ``predictions/.part-*.tmp*`` of earlier versions); call only while holding the lock."""
    stale = list((out / PREDICTIONS_DIR).glob(".part-*.tmp*"))
    if (out / TMP_DIR).is_dir():
        stale += list((out / TMP_DIR).iterdir())
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(stale)


@dataclass
class PartWriter:
    """Appends row groups to a part file and commits it every ``rows_per_part`` rows or
    ``commit_every_s`` seconds, so a long run keeps its progress visible and safe. Each committed
    part is indexed at once, from the rows in hand."""

    out: Path
    schema: pa.Schema
    run_id: str
    footer: dict[str, Any]
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
        try:
            self._writer.write_table(table)
        except OSError as exc:  # the part may now be inconsistent: none of its rows are kept
            self.discard()
            raise OutputError(f"cannot write to {self.out / TMP_DIR}: {exc.strerror or exc}") from exc
        self._index_rows.append(index_rows(table))
        self._rows += table.num_rows
        if self._rows >= self.rows_per_part or time.monotonic() - self._opened_at >= self.commit_every_s:
            self.commit()

    def commit(self) -> None:
        """Close the open part, sync it and rename it into the dataset, then index it; a no-op
        when nothing is open. A part without rows is discarded, never committed."""
        if self._writer is None:
            return
        if self._rows == 0:
            return self.discard()
        tmp, rows = self._tmp, np.concatenate(self._index_rows)
        final = self.out / PREDICTIONS_DIR / tmp.name
        try:
            self._writer.close()
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot write {tmp}: {exc.strerror or exc}") from exc
        self._reset()
        commit_file(tmp, final)
        self.indexes.append(write_index(final, rows))

    def discard(self) -> None:
        """Drop the open part and its rows (the next run classifies them again)."""
        if self._writer is not None:
            with suppress(OSError):
                self._writer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            log.warning("discarded the unfinished part %s (%d rows)", self._tmp.name, self._rows)
        self._reset()

    def _reset(self) -> None:
        self._writer, self._tmp, self._rows, self._index_rows = None, None, 0, []

    def _open(self) -> None:
        directory = self.out / TMP_DIR
        self._tmp = directory / f"part-{self.run_id}-{self._seq:05d}.parquet"
        self._seq += 1
        footer = {**self.footer, "run_id": self.run_id, "part_opened_at": time.time()}
        schema = with_footer(self.schema, footer)
        try:
            directory.mkdir(exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        except OSError as exc:
            self._tmp = None
            raise OutputError(f"cannot write to {directory}: {exc.strerror or exc}") from exc
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
