"""The files one classify run looks at: one walk of its tree, cut to its shard, minus what is done.

Sharding hashes each relative path, so N shard runs cover the tree exactly once whatever order or
machine they run in. Resume checks run on chunks of the walk in NumPy: one path hash per file in
Python, the rest (shard, resume key, lookup) on whole arrays. The walk also leaves behind what a
run reports about the tree: files found, skipped by extension, unlisted directories, and which
earlier rows lost their file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classify_job.classify.index import PartIndex, contains
from classify_job.errors import InputError
from classify_job.hashing import model_hash, path_hashes, resume_keys
from classify_job.walk import FileEntry, WalkStats, fs_path, iter_files, require_dir

CHUNK = 1024  # entries checked against the index at once


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based), written ``K/N`` on the command line."""

    index: int = 0
    count: int = 1

    MAX_COUNT: ClassVar[int] = 1_000_000
    EXPECTED: ClassVar[str] = f"K/N with 0 <= K < N <= {MAX_COUNT:,}, e.g. 0/4"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` in ASCII digits; N is bounded, so an absurd one is an InputError, not an
        OverflowError from the uint64 shard arithmetic."""
        found = re.fullmatch(r"\s*(\d{1,7})\s*/\s*(\d{1,7})\s*", text, re.ASCII)
        index, count = (int(found[1]), int(found[2])) if found else (-1, 0)
        if not 0 <= index < count <= cls.MAX_COUNT:
            raise InputError(f"--shard must be {cls.EXPECTED}. Received: {text!r}")
        return cls(index, count)

    def mask(self, hashes: np.ndarray) -> np.ndarray:
        """True for the path hashes that fall in this shard."""
        if self.count == 1:
            return np.ones(len(hashes), bool)
        return hashes % np.uint64(self.count) == np.uint64(self.index)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class TreeScan:
    """One walk of ``root``: :meth:`todo` yields the files of ``shard`` that ``done`` does not
    already cover for ``model_id``, counting the rest; afterwards :attr:`complete` says whether
    the walk reached its end, and :meth:`missing` finds rows whose file is gone."""

    root: Path
    extensions: tuple[str, ...]
    follow_symlinks: bool
    shard: Shard
    exclude: tuple[Path, ...]
    model_id: str
    done: Callable[[np.ndarray], np.ndarray]
    stats: WalkStats = field(default_factory=WalkStats)
    found: int = 0
    skipped: int = 0
    complete: bool = False
    _seen: list[np.ndarray] = field(default_factory=list)

    def todo(self) -> Iterator[FileEntry]:
        require_dir(self.root, "input directory")
        entries = iter_files(self.root, self.extensions, self.follow_symlinks, self.exclude, stats=self.stats)
        model = model_hash(self.model_id)
        while chunk := list(islice(entries, CHUNK)):
            hashes = path_hashes(e.relpath for e in chunk)
            mine = self.shard.mask(hashes)
            sizes = np.fromiter((e.size for e in chunk), np.int64, len(chunk))
            mtimes = np.fromiter((e.mtime_ns // 1000 for e in chunk), np.int64, len(chunk))
            done = self.done(resume_keys(hashes, sizes, mtimes, np.full(len(chunk), model, np.uint64)))
            self._seen.append(hashes[mine])
            self.found += int(mine.sum())
            self.skipped += int((mine & done).sum())
            yield from (entry for entry, todo in zip(chunk, mine & ~done, strict=True) if todo)
        self.complete = True

    def missing(self, parts: list[PartIndex]) -> list[tuple[PartIndex, np.ndarray]]:
        """For each part, the rows (a mask) whose file the walk did not see and that no longer
        exists. Only rows of this run's shard count; a file the walk merely skipped (an
        extension left out, a folder now hidden) still exists, so its row is not missing."""
        seen = np.sort(np.concatenate(self._seen or [np.zeros(0, np.uint64)]))
        found = []
        for part in parts:
            candidates = self.shard.mask(part.path_hash) & ~contains(seen, part.path_hash)
            if candidates.any():
                rows = np.flatnonzero(candidates)
                gone = np.zeros(len(part.rows), bool)
                gone[rows] = [not _exists(self.root, r, b) for r, b in _names(part.part, rows)]
                if gone.any():
                    found.append((part, gone))
        return found


def _names(part: Path, rows: np.ndarray) -> list[tuple[str, bytes | None]]:
    table = pq.read_table(part, columns=["relpath", "relpath_bytes"] if _has_bytes(part) else ["relpath"])
    taken = table.take(pa.array(rows))
    raw = taken.column("relpath_bytes").to_pylist() if "relpath_bytes" in taken.schema.names else None
    relpaths = taken.column("relpath").to_pylist()
    return list(zip(relpaths, raw or [None] * len(relpaths), strict=True))


def _has_bytes(part: Path) -> bool:
    return "relpath_bytes" in pq.read_schema(part).names


def _exists(root: Path, relpath: str, relpath_bytes: bytes | None) -> bool:
    """Whether the row's file is still there; a directory by that name now (a file replaced by a
    folder of the same name) means the file is gone, its row missing and pruned like any other."""
    try:
        st = os.lstat(fs_path(root, relpath, relpath_bytes))
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:  # cannot tell (a permission problem, a path too long): not missing
        return True
    return not stat.S_ISDIR(st.st_mode)
