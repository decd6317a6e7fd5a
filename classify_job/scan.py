"""Lazy, deterministic directory walking and sharding.

The walk visits names in sorted order, one directory at a time, so memory stays flat and two
runs over the same tree see the same sequence. Sharding hashes each relative path, so N shard
runs cover the tree exactly once whatever order or machine they run in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from classify_job.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FileEntry:
    """One file found by the walk. ``stat_error`` is set when the file could not be stat'ed."""

    path: str
    relpath: str
    size: int
    mtime_ns: int
    stat_error: str | None = None


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
        return self.count == 1 or stable_hash(relpath) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same on every machine and Python run (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """``["JPG", ".png"]`` -> ``{".jpg", ".png"}``."""
    result = frozenset("." + ext.strip().lower().lstrip(".") for ext in extensions if ext.strip())
    if not result:
        raise InputError("the extension filter is empty; give at least one extension, e.g. --ext jpg")
    return result


def iter_image_files(
    root: str | os.PathLike,
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    follow_symlinks: bool = False,
    shard: Shard = Shard(),
    exclude: Iterable[str | os.PathLike] = (),
) -> Iterator[FileEntry]:
    """Yield every file under ``root`` whose extension matches, in a deterministic order.

    Hidden files and folders (names starting with ".") are skipped, and so are the folders in
    ``exclude`` (an output directory inside the tree, for instance). Symbolic links are followed
    only with ``follow_symlinks``; directory cycles are then visited once.
    """
    root_path = Path(root).absolute()
    if not root_path.is_dir():
        raise InputError(f"input directory not found: {root}")
    exts = normalize_extensions(extensions)
    skip = {os.path.realpath(p) for p in exclude}
    walk = _walk(str(root_path), "", exts, follow_symlinks, skip, set())
    return (entry for entry in walk if shard.contains(entry.relpath))


def count_image_files(root: str | os.PathLike, **walk_options) -> int:
    """How many files :func:`iter_image_files` yields (a cheap pass: names only, no decoding)."""
    return sum(1 for _ in iter_image_files(root, **walk_options))


def _walk(
    directory: str, prefix: str, exts: frozenset[str], follow: bool, skip: set[str], seen: set
) -> Iterator[FileEntry]:
    if os.path.realpath(directory) in skip or not _first_visit(directory, follow, seen):
        return
    try:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s: %s", directory, exc.strerror or exc)
        return
    for child in children:
        if child.name.startswith("."):
            continue
        relpath = prefix + child.name
        if child.is_symlink() and not follow:
            continue
        if _is_dir(child, follow):
            yield from _walk(child.path, relpath + "/", exts, follow, skip, seen)
        elif os.path.splitext(child.name)[1].lower() in exts:
            yield _entry(child, relpath, follow)


def _first_visit(directory: str, follow: bool, seen: set) -> bool:
    if not follow:
        return True
    try:
        st = os.stat(directory)
    except OSError:
        return False
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True


def _is_dir(entry: os.DirEntry, follow: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


def _entry(child: os.DirEntry, relpath: str, follow: bool) -> FileEntry:
    try:
        st = child.stat(follow_symlinks=follow)
    except OSError as exc:
        return FileEntry(os.path.abspath(child.path), relpath, 0, 0, f"cannot stat: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return FileEntry(os.path.abspath(child.path), relpath, 0, 0, "not a regular file")
    return FileEntry(os.path.abspath(child.path), relpath, st.st_size, st.st_mtime_ns)
