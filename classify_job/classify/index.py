"""What an output directory already holds, kept beside its parts so a rerun reads no Parquet.

For every committed part, ``predictions/.index-v1/`` holds one small file: the 64-bit path hash
(:func:`~classify_job.hashing.path_hash` of the relpath) and resume key
(:func:`~classify_job.hashing.resume_keys`: relpath, size, mtime, model) of each row, 16 bytes a
row. Its name carries the part's size and mtime, so a part rewritten behind its back is simply
indexed again. A part without a fresh index file (written by an earlier version, merged, or
committed just before a crash) is read once, upgraded to the current schema if it is older, and
indexed. Rows are removed (superseded, or pruned because their file is gone) through the index
too: the part is rewritten by rename and re-indexed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from classify_job.atomic import atomic_path
from classify_job.hashing import model_hash, path_hashes, resume_keys
from classify_job.predictions import PREDICTIONS_DIR, list_parts, upgrade_part

log = logging.getLogger(__name__)

INDEX_DIR = ".index-v1"  # hidden: pandas, DuckDB and Spark skip it
KEY_COLUMNS = ("relpath", "bytes", "mtime", "model_id")
_ROW = np.dtype([("path_hash", np.uint64), ("key", np.uint64)])


@dataclass(frozen=True)
class PartIndex:
    """The path hash and resume key of every row of one part, in row order."""

    part: Path
    rows: np.ndarray  # structured: path_hash, key

    @property
    def path_hash(self) -> np.ndarray:
        return self.rows["path_hash"]


def index_rows(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Index rows for a table holding the key columns (Python work only for the relpath hashes)."""
    models = pc.dictionary_encode(table.column("model_id"))
    if isinstance(models, pa.ChunkedArray):
        models = models.combine_chunks()
    model = np.array([model_hash(m) for m in models.dictionary.to_pylist()], dtype=np.uint64)
    rows = np.empty(table.num_rows, dtype=_ROW)
    rows["path_hash"] = path_hashes(table.column("relpath").to_pylist())
    rows["key"] = resume_keys(
        rows["path_hash"],
        _numpy(table.column("bytes")),
        _numpy(pc.cast(table.column("mtime"), pa.int64())),
        model[_numpy(models.indices)],
    )
    return rows


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False)


def write_index(part: Path, rows: np.ndarray) -> PartIndex:
    """Record ``rows`` as the index of ``part`` (replacing any older index file of it)."""
    directory = part.parent / INDEX_DIR
    directory.mkdir(exist_ok=True)
    for stale in directory.glob(f"{part.stem}.*.npy"):
        stale.unlink(missing_ok=True)
    with atomic_path(directory / _index_name(part)) as tmp:
        np.save(tmp, rows)
    return PartIndex(part, rows)


def _index_name(part: Path) -> str:
    st = part.stat()
    return f"{part.stem}.{st.st_size}.{st.st_mtime_ns}.npy"


def _read_index(part: Path, fresh: set[str]) -> PartIndex:
    name = _index_name(part)
    if name in fresh:
        return PartIndex(part, np.load(part.parent / INDEX_DIR / name))
    if upgrade_part(part):
        log.info("upgraded %s to the current schema", part.name)
    return write_index(part, index_rows(pq.read_table(part, columns=list(KEY_COLUMNS))))


@dataclass
class OutputIndex:
    """Every committed part's index, and the sorted resume keys of all rows."""

    parts: list[PartIndex]

    @classmethod
    def load(cls, out: Path) -> OutputIndex:
        """Read the index files; index (and upgrade) parts without one. Hold the output lock."""
        directory = Path(out) / PREDICTIONS_DIR / INDEX_DIR
        fresh = {p.name for p in directory.glob("*.npy")} if directory.is_dir() else set()
        parts = [_read_index(part, fresh) for part in list_parts(out)]
        names = {_index_name(p.part) for p in parts}
        for orphan in fresh - names:  # parts that were merged away or replaced
            (directory / orphan).unlink(missing_ok=True)
        return cls(parts)

    def __len__(self) -> int:
        return sum(len(p.rows) for p in self.parts)

    @cached_property
    def sorted_keys(self) -> np.ndarray:
        return np.sort(np.concatenate([p.rows["key"] for p in self.parts] or [_EMPTY]))

    def done(self, keys: np.ndarray) -> np.ndarray:
        """True for each resume key that some row already has."""
        return contains(self.sorted_keys, keys)


_EMPTY = np.zeros(0, dtype=np.uint64)


def contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.isin`` for a sorted haystack: True where each of ``values`` occurs in it."""
    if len(sorted_values) == 0:
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def remove_rows(index: PartIndex, drop: np.ndarray) -> PartIndex:
    """Rewrite ``index.part`` without the rows where ``drop`` is True; returns its new index."""
    table = pq.read_table(index.part)
    with atomic_path(index.part) as tmp:
        pq.write_table(table.filter(pa.array(~drop)), tmp, compression="zstd")
    return write_index(index.part, index.rows[~drop])


def drop_superseded_rows(parts: list[PartIndex]) -> tuple[list[PartIndex], int]:
    """Keep only the newest row per relpath (parts are in commit order); returns the new part
    indexes and the number of rows removed.

    A changed file or a new model gives a relpath a second row; the older one goes. Hashes find
    the candidates, exact relpath comparison confirms them.
    """
    hashes = np.concatenate([p.path_hash for p in parts] or [_EMPTY])
    unique, counts = np.unique(hashes, return_counts=True)
    dup_hashes = unique[counts > 1]
    if len(dup_hashes) == 0:
        return parts, 0
    candidates = [np.isin(p.path_hash, dup_hashes) for p in parts]
    newest = _newest_owner(parts, candidates)
    kept, removed = [], 0
    for p, candidate in zip(parts, candidates, strict=True):
        drop = np.zeros(len(p.rows), bool)
        if candidate.any():
            relpaths = _relpaths(p.part, np.flatnonzero(candidate))
            drop[np.flatnonzero(candidate)] = [newest[r] != p.part for r in relpaths]
        kept.append(remove_rows(p, drop) if drop.any() else p)
        removed += int(drop.sum())
    return kept, removed


def _newest_owner(parts: Iterable[PartIndex], candidates: list[np.ndarray]) -> dict[str, Path]:
    newest: dict[str, Path] = {}
    for p, candidate in zip(parts, candidates, strict=True):
        if candidate.any():
            newest.update(dict.fromkeys(_relpaths(p.part, np.flatnonzero(candidate)), p.part))
    return newest


def part_path_hashes(part: Path) -> np.ndarray:
    """The path hash of every row of a part, read from its Parquet (for parts of other outputs)."""
    return path_hashes(pq.read_table(part, columns=["relpath"]).column("relpath").to_pylist())


def _relpaths(part: Path, rows: np.ndarray) -> list[str]:
    return pq.read_table(part, columns=["relpath"]).column("relpath").take(pa.array(rows)).to_pylist()
