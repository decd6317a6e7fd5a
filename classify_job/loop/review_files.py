"""Reading only regular files, and writing into DATA so that a kill leaves nothing half done:
a new image goes to a hidden partial name (synced), its log line is written, then it is renamed
into place; :func:`finish_partial_copies` completes or deletes what a killed import left."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from contextlib import suppress
from pathlib import Path
from typing import Any

from classify_job.errors import InputError, OutputError
from classify_job.hashing import content_hash_bytes
from classify_job.loop.review_log import ReviewLog, read_log, rel
from classify_job.predictions import fsync_dir
from classify_job.train.dataset import list_class_folders

_PARTIAL = ".importing"  # DATA/<class>/.<name>.importing: a copy not yet renamed into place
_OLD_PARTIAL = re.compile(r"^\.[0-9a-f]{16}\.tmp-\d+\.")  # atomic_path's name (earlier versions)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20


def listing(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot list {folder}: {exc.strerror or exc}") from exc


def open_regular(path: str | os.PathLike) -> int:
    """A descriptor of ``path`` opened without following a final symbolic link; OSError for
    a link or anything but a regular file."""
    fd = os.open(path, _READ_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def hash_regular(path: str | os.PathLike) -> tuple[str, int]:
    """SHA-256 and size of the regular file ``path`` (never a link's target)."""
    with os.fdopen(open_regular(path), "rb") as fh:
        digest, size = hashlib.sha256(), 0
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def read_regular(path: str | os.PathLike) -> bytes:
    with os.fdopen(open_regular(path), "rb") as fh:
        return fh.read()


def partial_name(dest: Path) -> Path:
    """The hidden name ``dest`` is written under until its log line is written."""
    return dest.with_name(f".{dest.name}{_PARTIAL}")


def copy_in(file: Any, dest: Path, logged: Any) -> None:
    """Write the bytes of ``file`` (a review entry: ``readable``, ``path``, ``sha256``) to ``dest``:
    to its partial name first (synced), then the log line (``logged()``, synced), then the rename."""
    if dest.exists():
        raise OutputError(f"{dest} exists with other content; left alone, nothing imported after it")
    try:
        content = read_regular(file.readable)
    except OSError as exc:
        raise InputError(f"cannot read {file.path}: {exc.strerror or exc}") from exc
    if content_hash_bytes(content) != file.sha256:
        raise InputError(f"{file.path} changed during the import; run it again")
    tmp = partial_name(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    logged()
    try:
        os.replace(tmp, dest)
        sync_dir(dest.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}; run the import again") from exc


def sync_dir(folder: Path) -> None:
    with suppress(OSError):  # not every file system lets a folder be synced
        fsync_dir(folder)


def finish_partial_copies(data: Path, log: ReviewLog) -> tuple[int, int]:
    """Finish or remove what a killed import left in DATA's class folders: a partial copy whose
    "add" line is in the log (with its bytes) is renamed into place, any other is deleted, as
    are the temporaries of earlier versions. Returns (finished, removed)."""
    finished = removed = 0
    added = {row["path"]: row["sha256"] for row in read_log(log.path) if row.get("action") == "add"}
    for folder in list_class_folders(data):
        for entry in listing(data / folder):
            name = entry.name
            if not name.startswith(".") or entry.is_dir(follow_symlinks=False):
                continue
            if name.endswith(_PARTIAL):
                dest = Path(entry.path).with_name(name[1 : -len(_PARTIAL)])
                sha = added.get(rel(dest, data))
                try:
                    if sha and not dest.exists() and hash_regular(entry.path)[0] == sha:
                        os.replace(entry.path, dest)
                        sync_dir(dest.parent)
                        finished += 1
                        continue
                except OSError:
                    pass
            elif not _OLD_PARTIAL.match(name):
                continue
            with suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return finished, removed


def check_free(dest: Path, twins: set[Path]) -> None:
    if dest.exists() and dest not in twins:
        raise OutputError(f"{dest} exists with other content; left alone, nothing imported after it")


def move(old: Path, dest: Path, twins: set[Path]) -> None:
    check_free(dest, twins)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, dest)  # replaces at most a twin with the same bytes: nothing is lost
    except OSError as exc:
        raise OutputError(f"cannot move {old} to {dest}: {exc.strerror or exc}") from exc
