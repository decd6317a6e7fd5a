"""What is already done in an output directory, and removal of rows a later run superseded.

A file is done when a row exists with the same relpath, size, mtime and model id. Keys are kept
as a sorted array of 64-bit hashes (8 bytes per file), so resuming a ten-million-file tree costs
tens of megabytes, not gigabytes of Python strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from classify_job.atomic import atomic_path
from classify_job.hashing import path_hashes, resume_key
from classify_job.predictions import iter_batches, list_parts
from classify_job.walk import FileEntry

KEY_COLUMNS = ("relpath", "bytes", "mtime", "model_id")


def entry_key(entry: FileEntry, model_id: str) -> int:
    return resume_key(entry.relpath, entry.size, entry.mtime_ns // 1000, model_id)


@dataclass(frozen=True)
class ResumeIndex:
    """Sorted hashes of the (relpath, bytes, mtime, model_id) of every existing row."""

    keys: np.ndarray

    @classmethod
    def from_output(cls, out: Path) -> ResumeIndex:
        chunks = [_batch_keys(batch) for _, batch in iter_batches(out, KEY_COLUMNS)]
        keys = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.uint64)
        return cls(np.sort(keys))

    def __len__(self) -> int:
        return len(self.keys)

    def is_done(self, entry: FileEntry, model_id: str) -> bool:
        key = np.uint64(entry_key(entry, model_id))
        i = np.searchsorted(self.keys, key)
        return bool(i < len(self.keys) and self.keys[i] == key)


def _batch_keys(batch: pa.RecordBatch) -> np.ndarray:
    mtimes = pc.cast(batch.column("mtime"), pa.int64()).to_pylist()
    rows = zip(
        batch.column("relpath").to_pylist(),
        batch.column("bytes").to_pylist(),
        mtimes,
        batch.column("model_id").to_pylist(),
        strict=True,
    )
    return np.fromiter((resume_key(*row) for row in rows), dtype=np.uint64, count=batch.num_rows)


def drop_superseded_rows(out: Path) -> int:
    """Keep only the newest row per relpath (parts are in commit order); returns rows removed.

    A changed file or a new model gives a relpath a second row; the older one goes. Hashes find
    the candidates, exact string comparison confirms them, and each touched part is rewritten
    under a temporary name and renamed over the old one.
    """
    locations = [(part, relpath_hashes(part)) for part in list_parts(out)]
    if not locations:
        return 0
    all_hashes = np.concatenate([hashes for _, hashes in locations])
    unique, counts = np.unique(all_hashes, return_counts=True)
    dup_hashes = unique[counts > 1]
    if len(dup_hashes) == 0:
        return 0
    newest = _newest_owner(locations, dup_hashes)
    return sum(_rewrite_without_older(part, hashes, dup_hashes, newest) for part, hashes in locations)


def relpath_hashes(part: Path) -> np.ndarray:
    """The stable hash of every relpath in a part file, in row order."""
    return path_hashes(pq.read_table(part, columns=["relpath"]).column("relpath").to_pylist())


def _newest_owner(locations: list[tuple[Path, np.ndarray]], dup_hashes: np.ndarray) -> dict[str, Path]:
    """relpath -> the last part holding it, for the relpaths whose hash occurs twice or more."""
    newest: dict[str, Path] = {}
    for part, hashes in locations:
        rows = np.flatnonzero(np.isin(hashes, dup_hashes))
        if len(rows):
            relpaths = pq.read_table(part, columns=["relpath"]).column("relpath").take(rows)
            newest.update(dict.fromkeys(relpaths.to_pylist(), part))
    return newest


def _rewrite_without_older(part: Path, hashes: np.ndarray, dup_hashes: np.ndarray, newest: dict) -> int:
    candidates = np.isin(hashes, dup_hashes)
    if not candidates.any():
        return 0
    table = pq.read_table(part)
    relpaths = table.column("relpath").to_pylist()
    keep = [not (c and newest.get(r, part) != part) for c, r in zip(candidates, relpaths, strict=True)]
    removed = len(keep) - sum(keep)
    if removed:
        with atomic_path(part) as tmp:
            pq.write_table(table.filter(pa.array(keep)), tmp, compression="zstd")
    return removed
