"""The one directory walker: classify, training and check-data all see a tree the same way.

Rules: names are visited in sorted order, one directory at a time (memory stays flat and two walks
of one tree see one sequence); names starting with "." are skipped, files and folders alike;
symbolic links are followed only when asked, and then each real directory is visited once;
folders in ``exclude`` (an output directory inside the tree) are skipped. Files whose extension
is not wanted, and directories that cannot be listed, are counted in :class:`WalkStats`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from classify_job.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FileEntry:
    """One file found by the walk. ``stat_error`` is set when it could not be stat'ed or is not a
    regular file; ``relpath`` is relative to the walk's root, "/"-separated."""

    path: str
    relpath: str
    size: int
    mtime_ns: int
    stat_error: str | None = None


@dataclass
class WalkStats:
    """What a walk passed over: files skipped by extension (per extension, "" for none) and
    directories it could not list (relpath -> reason). ``ignored_paths`` lists the skipped files
    when it is a list (check-data wants them; a classify run only counts)."""

    ignored: Counter[str] = field(default_factory=Counter)
    unlisted: dict[str, str] = field(default_factory=dict)
    ignored_paths: list[str] | None = None

    def skip(self, relpath: str, extension: str) -> None:
        self.ignored[extension] += 1
        if self.ignored_paths is not None:
            self.ignored_paths.append(relpath)


def normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """``["JPG", ".png"]`` -> ``{".jpg", ".png"}``."""
    result = frozenset("." + ext.strip().lower().lstrip(".") for ext in extensions if ext.strip())
    if not result:
        raise InputError("the extension filter is empty; give at least one extension, e.g. --ext jpg")
    return result


def iter_files(
    root: str | os.PathLike,
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    follow_symlinks: bool = False,
    exclude: Iterable[str | os.PathLike] = (),
    prefix: str = "",
    stats: WalkStats | None = None,
) -> Iterator[FileEntry]:
    """Yield every file under ``root`` whose extension is in ``extensions``, by the rules above.

    ``prefix`` is put before every relpath (``"train/cat/"`` when walking ``root/train/cat``).
    """
    root_path = Path(root).absolute()
    if not root_path.is_dir():
        raise InputError(f"directory not found: {root}")
    walker = _Walker(
        normalize_extensions(extensions),
        follow_symlinks,
        {os.path.realpath(p) for p in exclude},
        stats if stats is not None else WalkStats(),
    )
    return walker.walk(str(root_path), prefix)


@dataclass
class _Walker:
    extensions: frozenset[str]
    follow: bool
    skip_dirs: set[str]
    stats: WalkStats
    seen: set[tuple[int, int]] = field(default_factory=set)

    def walk(self, directory: str, prefix: str) -> Iterator[FileEntry]:
        if os.path.realpath(directory) in self.skip_dirs or not self._first_visit(directory):
            return
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.stats.unlisted[prefix.rstrip("/") or "."] = reason
            log.warning("cannot list %s: %s", directory, reason)
            return
        for child in children:
            if child.name.startswith(".") or (child.is_symlink() and not self.follow):
                continue
            relpath = prefix + child.name
            if _is_dir(child, self.follow):
                yield from self.walk(child.path, relpath + "/")
                continue
            extension = os.path.splitext(child.name)[1].lower()
            if extension in self.extensions:
                yield _entry(child, relpath, self.follow)
            else:
                self.stats.skip(relpath, extension)

    def _first_visit(self, directory: str) -> bool:
        if not self.follow:
            return True
        try:
            st = os.stat(directory)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            return False
        self.seen.add(key)
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
