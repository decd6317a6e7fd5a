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
from typing import Any, NamedTuple

from classify_job.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (
    *(".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".heic", ".heif", ".avif"),
)
NOT_REGULAR = "not a regular file"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
# Directories deeper than this are closed while their subdirectories are walked and reopened
# after, so a tree of any depth holds at most this many descriptors (RLIMIT_NOFILE is often 1024).
OPEN_LEVELS = 64


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


def require_dir(path: str | os.PathLike, what: str = "directory") -> str | os.PathLike:
    """``path`` if it is a directory; else the one InputError for every tree that is walked."""
    if not os.path.isdir(path):
        raise InputError(f"{what} not found: {path}")
    return path


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
    root_path = os.path.abspath(os.fspath(require_dir(root)))
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
        """Depth-first over an explicit stack of directories (no recursion on the Python stack,
        so any depth walks); ``raw_prefix`` is None while every name so far is valid UTF-8.
        Files are handled inline; the first subdirectory found pauses its parent's listing."""
        stack: list[_Dir] = []
        try:
            self._push(stack, fd, "", path, prefix, raw_prefix)
            while stack:
                top = stack[-1]
                path, prefix, raw_prefix = top.path, top.prefix, top.raw_prefix
                for child, text in top.children:
                    name = child.name
                    if name[0] == "." or (not self.follow and child.is_symlink()):
                        continue
                    raw = None
                    if raw_prefix is not None or text is not name:
                        raw = (raw_prefix if raw_prefix is not None else prefix.encode()) + os.fsencode(name)
                    if _is_dir(child, self.follow):
                        if self._descend(stack, name, f"{path}/{name}", prefix + text + "/", raw):
                            break
                    elif (entry := self._file(child, f"{path}/{name}", prefix + text, raw)) is not None:
                        yield entry
                else:
                    self._pop(stack)
        finally:
            for level in stack:
                if level.fd is not None:
                    os.close(level.fd)

    def _descend(self, stack: list[_Dir], name: str, path: str, prefix: str, raw: bytes | None) -> bool:
        """Open subdirectory ``name`` of the top of ``stack`` and push it; False if it is not walked.
        Past :data:`OPEN_LEVELS` the parent's descriptor is closed meanwhile (see :meth:`_pop`)."""
        parent = stack[-1]
        try:
            sub = os.open(name, _DIR_FLAGS | (0 if self.follow else os.O_NOFOLLOW), dir_fd=parent.fd)
        except OSError as exc:
            self._unlisted(prefix, exc)
            return False
        if not self._push(stack, sub, name, path, prefix, None if raw is None else raw + b"/"):
            return False
        if len(stack) > OPEN_LEVELS:
            os.close(parent.fd)
            parent.fd = None
        return True

    def _push(self, stack: list[_Dir], fd: int, name: str, path: str, prefix: str, raw: bytes | None) -> bool:
        """List the open directory ``fd`` and push it (True), or close it: already visited,
        excluded or unlistable (False)."""
        try:
            ident = self._first_visit(fd)
            if ident is None:
                os.close(fd)
                return False
            with os.scandir(fd) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            os.close(fd)
            self._unlisted(prefix, exc)
            return False
        texts = _child_texts([c.name for c in children])
        stack.append(_Dir(fd, ident, name, path, prefix, raw, zip(children, texts, strict=True)))
        return True

    def _pop(self, stack: list[_Dir]) -> None:
        """Close the finished top directory; reopen its parent first if that one was closed."""
        done = stack.pop()
        try:
            if stack and stack[-1].fd is None:
                self._reopen(stack, done.fd)
        finally:
            if done.fd is not None:
                os.close(done.fd)

    def _reopen(self, stack: list[_Dir], child_fd: int | None) -> None:
        """Reopen the top of ``stack``: as ``..`` of the child just finished, or else (a followed
        link, a mount, a rename meanwhile) name by name from the deepest open ancestor; its
        remaining entries are then stat'ed through the new descriptor. A directory that is no
        longer the one listed gets the rest of its entries counted as unlisted."""
        level = stack[-1]
        fd = None if child_fd is None else _open_same(level.ident, "..", child_fd, _DIR_FLAGS)
        if fd is None:
            fd = self._reopen_by_names(stack)
        if fd is None:
            self._unlisted(level.prefix, OSError(0, "changed while it was being walked"))
            level.children = iter(())
            return
        if not level.rebound:
            level.children = ((_Rebound(child, level), text) for child, text in level.children)
            level.rebound = True
        level.fd = fd

    def _reopen_by_names(self, stack: list[_Dir]) -> int | None:
        start = max(i for i, level in enumerate(stack) if level.fd is not None)
        fd = stack[start].fd
        flags = _DIR_FLAGS | (0 if self.follow else os.O_NOFOLLOW)
        for level in stack[start + 1 :]:
            sub = _open_same(level.ident, level.name, fd, flags)
            if fd != stack[start].fd:
                os.close(fd)
            if sub is None:
                return None
            fd = sub
        return fd

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

    def _first_visit(self, fd: int) -> tuple[int, int] | None:
        """The directory's identity, or None when it is excluded or (following links) seen before."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in self.skip_dirs or (self.follow and key in self.seen):
            return None
        if self.follow:
            self.seen.add(key)
        return key

    def _unlisted(self, prefix: str, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        self.stats.unlisted[prefix.rstrip("/") or "."] = reason
        log.warning("cannot list %s: %s", prefix.rstrip("/") or ".", reason)


@dataclass(slots=True)
class _Dir:
    """One directory on the walk's stack: its descriptor (None while closed to bound how many are
    open), identity, name in its parent, and the sorted entries still to visit."""

    fd: int | None
    ident: tuple[int, int]
    name: str
    path: str
    prefix: str
    raw_prefix: bytes | None
    children: Iterator[tuple[Any, str]]
    rebound: bool = False


class _Rebound:
    """A listed entry of a directory that was closed and reopened: ``os.DirEntry`` keeps the old
    descriptor's number, so stat through the directory's current descriptor instead."""

    __slots__ = ("_level", "name")

    def __init__(self, entry: os.DirEntry, level: _Dir) -> None:
        self.name = entry.name
        self._level = level

    def stat(self, follow_symlinks: bool = True) -> os.stat_result:
        return os.stat(self.name, dir_fd=self._level.fd, follow_symlinks=follow_symlinks)

    def is_symlink(self) -> bool:
        try:
            return stat.S_ISLNK(self.stat(follow_symlinks=False).st_mode)
        except OSError:
            return False

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return stat.S_ISDIR(self.stat(follow_symlinks=follow_symlinks).st_mode)


def _open_same(ident: tuple[int, int], name: str, dir_fd: int, flags: int) -> int | None:
    """Open ``name`` under ``dir_fd`` if it is still the directory ``ident``; else None."""
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != ident:
        os.close(fd)
        return None
    return fd


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
