"""An exclusive, crash-safe lock on an output directory (``OUT/.lock``).

``flock`` locks die with their process, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from classify_job.errors import LockHeldError, OutputError

LOCK_FILE = ".lock"


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the lock on ``out`` for the duration of the block, or raise LockHeldError at once."""
    path = out / LOCK_FILE
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115  closed in finally
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockHeldError(f"{out} is being written by another run ({holder})") from exc
        handle.truncate(0)
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%FT%TZ', time.gmtime())}"
        )
        handle.flush()
        yield
    finally:
        handle.close()
