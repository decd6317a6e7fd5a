"""What an output directory already holds, kept beside its parts so a rerun reads no Parquet rows.

For every committed part, ``OUT/.index-v2/`` holds one small file: the 64-bit path hash
(:func:`~classify_job.hashing.path_hash` of the relpath) and resume key
(:func:`~classify_job.hashing.resume_keys`: relpath, size, mtime, model) of each row, 16 bytes a
row. Its name carries the part's size and mtime and a CRC-32 of the rows, so a part rewritten
behind its back, or an index file that lost or changed bytes, is caught without reading the part.

The index is derived: a missing, stale or damaged index file is rebuilt from its part. Loading
checks each part's footer (:func:`~classify_job.predictions.check_part`, one small read a part):
an unreadable part is quarantined, so its files are classified again, and a part with no rows is
deleted. What the footer says of the part's run (its model, its calibration) is kept with the
part's index, so nothing later in the run reads the footer again. Version 1 kept its files inside
``predictions/``, where Polars refuses them; they are discarded on the first load. Rows are removed
(superseded, or pruned because their file is gone) through the index too: the part is rewritten by
rename and re-indexed, or deleted when empty.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from classify_job.atomic import atomic_path
from classify_job.hashing import model_hash, path_hashes, resume_keys
from classify_job.predictions import (
    METADATA_KEY,
    PREDICTIONS_DIR,
    UnreadablePart,
    check_part,
    delete_part,
    fsync_dir,
    list_parts,
    out_of,
    quarantine_part,
    read_part,
    upgrade_part,
    write_part,
)

log = logging.getLogger(__name__)

INDEX_DIR = ".index-v2"  # beside predictions/, which holds parts only
OLD_INDEX_DIRS = (f"{PREDICTIONS_DIR}/.index-v1",)  # rebuilt, not migrated: the index is derived
KEY_COLUMNS = ("relpath", "bytes", "mtime", "model_id")
_ROW = np.dtype([("path_hash", np.uint64), ("key", np.uint64)])


@dataclass(frozen=True)
class PartIndex:
    """The path hash and resume key of every row of one part, in row order, and what the part's
    footer says of its run (``None`` where this index was not loaded with the footer)."""

    part: Path
    rows: np.ndarray  # structured: path_hash, key
    footer: dict[str, Any] | None = None

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


def write_index(part: Path, rows: np.ndarray, footer: dict[str, Any] | None = None) -> PartIndex:
    """Record ``rows`` as the index of ``part`` (replacing any older index file of it), synced:
    the part is committed first, so a crash in between leaves a part that is simply re-indexed.
    ``footer``, when the caller knows it, is kept with the returned index."""
    directory = out_of(part) / INDEX_DIR
    directory.mkdir(exist_ok=True)
    for stale in directory.glob(f"{part.stem}.*.npy"):
        stale.unlink(missing_ok=True)
    with atomic_path(directory / _index_name(part, _crc(rows))) as tmp, open(tmp, "wb") as file:
        np.save(file, rows)
        file.flush()
        os.fsync(file.fileno())
    fsync_dir(directory)
    return PartIndex(part, rows, footer)


def _crc(rows: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(rows).view(np.uint8))


def _index_name(part: Path, crc: int) -> str:
    return f"{_index_prefix(part)}{crc:08x}.npy"


def _index_prefix(part: Path) -> str:
    st = part.stat()
    return f"{part.stem}.{st.st_size}.{st.st_mtime_ns}."


def _verified(path: Path, expected_rows: int | None = None) -> np.ndarray | None:
    """The rows of an index file if its CRC-32 (and row count, when given) hold, else None."""
    try:
        rows = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("index %s is damaged (%s); rebuilding it from its part", path.name, exc)
        return None
    crc = path.name.removesuffix(".npy").rsplit(".", 1)[-1]
    if rows.dtype != _ROW or f"{_crc(rows):08x}" != crc:
        log.warning("index %s does not match its checksum; rebuilding it from its part", path.name)
        return None
    if expected_rows is not None and len(rows) != expected_rows:
        log.warning("index %s does not match its part's row count; rebuilding it", path.name)
        return None
    return rows


def _load_part(part: Path, index_files: dict[str, list[str]], directory: Path) -> PartIndex | None:
    """The index of one part: its footer checked, its index file verified or rebuilt. None for a
    part without rows, which is deleted; UnreadablePart for one that cannot be read."""
    metadata = check_part(part)
    if metadata.num_rows == 0:
        log.info("removing %s: it holds no rows", part.name)
        delete_part(part)
        return None
    try:
        footer = footer_of(metadata)  # an upgrade below keeps it: it only adds columns
    except ValueError as exc:  # a footer that parses as Parquet but not as ours
        raise UnreadablePart(part, exc) from exc
    prefix = _index_prefix(part)
    for name in index_files.get(part.stem, []):
        if name.startswith(prefix) and (rows := _verified(directory / name, metadata.num_rows)) is not None:
            return PartIndex(part, rows, footer)
    if upgrade_part(part):
        log.info("upgraded %s to the current schema", part.name)
    return write_index(part, index_rows(read_part(part, KEY_COLUMNS)), footer)


def footer_of(metadata: pq.FileMetaData) -> dict[str, Any]:
    """What a part's footer says of its run, from the metadata :func:`check_part` read."""
    raw = (metadata.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


@dataclass(frozen=True)
class Quarantined:
    """A part moved to ``OUT/quarantine/``: its name, why, and its rows when an index knew them."""

    part: str
    reason: str
    rows: int | None

    def as_dict(self) -> dict[str, object]:
        return {"part": self.part, "reason": self.reason, "rows": self.rows}


@dataclass
class OutputIndex:
    """Every committed part's index, the sorted resume keys of all rows, and the parts this load
    had to quarantine."""

    parts: list[PartIndex]
    quarantined: list[Quarantined] = field(default_factory=list)

    @classmethod
    def load(cls, out: Path) -> OutputIndex:
        """Check every part's footer, read or rebuild its index, quarantine what cannot be read.
        Hold the output lock."""
        out = Path(out)
        for old in OLD_INDEX_DIRS:
            shutil.rmtree(out / old, ignore_errors=True)
        directory = out / INDEX_DIR
        names = os.listdir(directory) if directory.is_dir() else []
        index_files: dict[str, list[str]] = defaultdict(list)
        for name in names:
            index_files[name.split(".", 1)[0]].append(name)
        parts, quarantined = [], []
        for part in list_parts(out):
            try:
                if (loaded := _load_part(part, index_files, directory)) is not None:
                    parts.append(loaded)
            except UnreadablePart as exc:
                quarantined.append(quarantine(exc, index_files, directory))
        current = {p.part.stem: _index_prefix(p.part) for p in parts}
        for name in names:  # indexes of parts merged away, emptied or quarantined; stale temporaries
            if not name.startswith(current.get(name.split(".", 1)[0], "\0")):
                (directory / name).unlink(missing_ok=True)
        return cls(parts, quarantined)

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


def quarantine(exc: UnreadablePart, index_files: dict[str, list[str]], directory: Path) -> Quarantined:
    """Move the part ``exc`` names to ``OUT/quarantine/``, noting its rows if an index knew them."""
    quarantine_part(exc.part, exc.reason)
    known = [
        rows
        for name in index_files.get(exc.part.stem, [])
        if (rows := _verified(directory / name)) is not None
    ]
    return Quarantined(exc.part.name, exc.reason, len(known[0]) if known else None)


def remove_rows(index: PartIndex, drop: np.ndarray) -> PartIndex | None:
    """Rewrite ``index.part`` without the rows where ``drop`` is True; returns its new index, or
    None when no row is left: the part is deleted, since an empty part with an old column list
    would make pandas and DuckDB (which take the columns from one file) drop newer columns."""
    if drop.all():
        delete_part(index.part)
        for stale in (out_of(index.part) / INDEX_DIR).glob(f"{index.part.stem}.*.npy"):
            stale.unlink(missing_ok=True)
        return None
    table = read_part(index.part)
    write_part(index.part, table.filter(pa.array(~drop)))  # the footer goes with the table
    return write_index(index.part, index.rows[~drop], index.footer)


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
    relpaths = {  # each candidate part's relpaths read once, for both passes below
        p.part: _relpaths(p.part, np.flatnonzero(c))
        for p, c in zip(parts, candidates, strict=True)
        if c.any()
    }
    newest: dict[str, Path] = {}
    for part, names in relpaths.items():  # in commit order: the last part to hold a relpath wins
        newest.update(dict.fromkeys(names, part))
    kept, removed = [], 0
    for p, candidate in zip(parts, candidates, strict=True):
        drop = np.zeros(len(p.rows), bool)
        if candidate.any():
            drop[np.flatnonzero(candidate)] = [newest[r] != p.part for r in relpaths[p.part]]
        kept.append(remove_rows(p, drop) if drop.any() else p)
        removed += int(drop.sum())
    return [p for p in kept if p is not None], removed


def part_path_hashes(part: Path) -> np.ndarray:
    """The path hash of every row of a part, read from its Parquet (for parts of other outputs)."""
    return path_hashes(read_part(part, ["relpath"]).column("relpath").to_pylist())


def _relpaths(part: Path, rows: np.ndarray) -> list[str]:
    return read_part(part, ["relpath"]).column("relpath").take(pa.array(rows)).to_pylist()
