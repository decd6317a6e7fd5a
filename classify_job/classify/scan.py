"""The files one classify run looks at: the walk of its tree, cut to its shard.

Sharding hashes each relative path, so N shard runs cover the tree exactly once whatever order or
machine they run in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from classify_job.errors import InputError
from classify_job.hashing import shard_of
from classify_job.walk import FileEntry, WalkStats, iter_files


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based), written ``K/N`` on the command line."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError as exc:
            raise InputError(f"--shard must look like K/N, e.g. 0/4. Received: {text!r}") from exc
        if count < 1 or not 0 <= index < count:
            raise InputError(f"--shard K/N needs 0 <= K < N. Received: {text!r}")
        return cls(index, count)

    def contains(self, relpath: str) -> bool:
        return self.count == 1 or shard_of(relpath, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def scan_tree(
    root: Path,
    extensions: tuple[str, ...],
    follow_symlinks: bool,
    shard: Shard,
    exclude: tuple[Path, ...] = (),
    stats: WalkStats | None = None,
) -> Iterator[FileEntry]:
    """The files of ``root`` that belong to ``shard``, in walk order."""
    if not root.is_dir():
        raise InputError(f"input directory not found: {root}")
    entries = iter_files(root, extensions, follow_symlinks, exclude, stats=stats)
    return (entry for entry in entries if shard.contains(entry.relpath))
