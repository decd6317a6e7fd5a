"""The one directory walker: classify, training and check-data all see a tree the same way.

Rules: names are visited in sorted order, one directory at a time (memory stays flat and two walks
of one tree see one sequence); names starting with "." are skipped, files and folders alike;
symbolic links are followed only when asked, and then each real directory is visited once;
folders in ``exclude`` (an output directory inside the tree) are skipped. Files whose extension
is not wanted, and directories that cannot be listed, are counted in :class:`WalkStats`.

Directories are opened relative to their parent (``openat``), so a tree deeper than PATH_MAX is
walked like any other. Any name the OS returns gets an entry: a name that is not valid UTF-8 is
given a text form by :func:`escape_name`, and its raw bytes travel with the entry.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from classify_job.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (
    *(".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".heic", ".heif", ".avif"),
)
NOT_REGULAR = "not a regular file"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


class FileEntry(NamedTuple):
    """One file found by the walk.

    ``path`` is what ``open()`` takes (a ``str`` that may hold surrogate escapes); ``relpath`` is
    valid UTF-8 text, relative to the walk's root and "/"-separated, unique within the walk;
    ``relpath_bytes`` holds the raw bytes when the relpath had to be escaped. ``stat_error`` is
    set when the file could not be stat'ed or is not a regular file (size and mtime are then 0).
    """

    path: str
    relpath: str
    size: int
    mtime_ns: int
    stat_error: str | None = None
    relpath_bytes: bytes | None = None


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


def escape_name(name: str, everything: bool = False) -> str:
    """The text form of a file name as the OS returned it (``str`` with surrogate escapes).

    Valid UTF-8 is returned unchanged. Otherwise each byte that is not part of valid UTF-8 is
    written ``\\xHH`` and each backslash ``\\x5c``, so two different names never give one string
    and the bytes can be read back. ``everything=True`` writes every byte as ``\\xHH`` (used only
    when the first form collides with a real sibling's name).
    """
    if not everything and _is_utf8(name):
        return name
    if everything:
        return "".join(f"\\x{b:02x}" for b in os.fsencode(name))
    out = []
    for c in name:
        if "\udc80" <= c <= "\udcff":
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\":
            out.append("\\x5c")
        else:
            out.append(c)
    return "".join(out)


def _is_utf8(name: str) -> bool:
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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

    ``prefix`` is put before every relpath (``"train/cat/"`` when walking ``root/train/cat``); it
    is given as the OS returned it and escaped like any name.
    """
    root_path = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_path):
        raise InputError(f"directory not found: {root}")
    walker = _Walker(
        normalize_extensions(extensions),
        follow_symlinks,
        {_identity(p) for p in exclude} - {None},
        stats if stats is not None else WalkStats(),
    )
    return walker.walk_root(root_path, prefix)


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class _Walker:
    extensions: frozenset[str]
    follow: bool
    skip_dirs: set[tuple[int, int]]
    stats: WalkStats
    seen: set[tuple[int, int]] = field(default_factory=set)

    def walk_root(self, root: str, prefix: str) -> Iterator[FileEntry]:
        try:
            fd = os.open(root, _DIR_FLAGS)
        except OSError as exc:
            self._unlisted(prefix, exc)
            return iter(())
        text = "/".join(escape_name(part) for part in prefix.split("/"))
        return self._walk(fd, root, text, None if text == prefix else os.fsencode(prefix))

    def _walk(self, fd: int, path: str, prefix: str, raw_prefix: bytes | None) -> Iterator[FileEntry]:
        """Walk the open directory ``fd`` (closed here); ``raw_prefix`` is None while every name
        so far is valid UTF-8. Files are handled inline: one generator per directory level."""
        try:
            if not self._first_visit(fd):
                return
            try:
                with os.scandir(fd) as it:
                    children = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self._unlisted(prefix, exc)
                return
            texts = _child_texts([c.name for c in children])
            for child, text in zip(children, texts, strict=True):
                name = child.name
                if name[0] == "." or (not self.follow and child.is_symlink()):
                    continue
                raw = None
                if raw_prefix is not None or text is not name:
                    raw = (raw_prefix if raw_prefix is not None else prefix.encode()) + os.fsencode(name)
                if _is_dir(child, self.follow):
                    yield from self._subdir(fd, name, f"{path}/{name}", prefix + text + "/", raw)
                elif (entry := self._file(child, f"{path}/{name}", prefix + text, raw)) is not None:
                    yield entry
        finally:
            os.close(fd)

    def _subdir(self, fd: int, name: str, path: str, prefix: str, raw: bytes | None) -> Iterator[FileEntry]:
        try:
            sub = os.open(name, _DIR_FLAGS | (0 if self.follow else os.O_NOFOLLOW), dir_fd=fd)
        except OSError as exc:
            self._unlisted(prefix, exc)
            return iter(())
        return self._walk(sub, path, prefix, None if raw is None else raw + b"/")

    def _file(self, child: os.DirEntry, path: str, relpath: str, raw: bytes | None) -> FileEntry | None:
        extension = os.path.splitext(child.name)[1].lower()
        if extension not in self.extensions:
            self.stats.skip(relpath, escape_name(extension))
            return None
        try:
            st = child.stat(follow_symlinks=self.follow)
        except OSError as exc:
            return FileEntry(path, relpath, 0, 0, f"cannot stat: {exc.strerror or exc}", raw)
        if not stat.S_ISREG(st.st_mode):
            return FileEntry(path, relpath, 0, 0, NOT_REGULAR, raw)
        return FileEntry(path, relpath, st.st_size, st.st_mtime_ns, None, raw)

    def _first_visit(self, fd: int) -> bool:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in self.skip_dirs or (self.follow and key in self.seen):
            return False
        if self.follow:
            self.seen.add(key)
        return True

    def _unlisted(self, prefix: str, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        self.stats.unlisted[prefix.rstrip("/") or "."] = reason
        log.warning("cannot list %s: %s", prefix.rstrip("/") or ".", reason)


def _child_texts(names: list[str]) -> list[str]:
    """The text form of each sibling name; the same object as the name when it is valid UTF-8.

    An escaped name that is spelled like a real sibling gets the every-byte form instead, so
    relpaths stay unique.
    """
    texts = [name if _is_utf8(name) else escape_name(name) for name in names]
    if all(t is n for t, n in zip(texts, names, strict=True)):
        return texts
    plain = {n for n in names if _is_utf8(n)}
    return [
        escape_name(n, everything=True) if t is not n and t in plain else t
        for t, n in zip(texts, names, strict=True)
    ]


def _is_dir(entry: os.DirEntry, follow: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


def display_path(path: str) -> str:
    """An OS path as text: unchanged when valid UTF-8, else each component escaped like a name."""
    return path if _is_utf8(path) else "/".join(escape_name(part) for part in path.split("/"))


def fs_path(root: str | os.PathLike, relpath: str, relpath_bytes: bytes | None) -> str:
    """The path ``open()`` takes for a row: from its raw bytes when the relpath was escaped."""
    if relpath_bytes is None:
        return os.path.join(os.fspath(root), relpath)
    return os.path.join(os.fspath(root), os.fsdecode(relpath_bytes))
