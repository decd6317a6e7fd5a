"""Write-then-rename: every file the project writes appears whole or not at all.

A reader (a person, pandas, a scheduler, a second run) never sees half a file, a crash leaves at
most a hidden temporary file behind, and a failed write is an OutputError naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from classify_job.errors import OutputError


def temporary_name(path: Path) -> Path:
    """The hidden name ``path`` is written under: ``dir/.stem.tmp-PID.suffix``.

    The suffix is kept because some writers choose their format by it (Keras wants ``.keras``,
    matplotlib ``.png``); the process id keeps two writers of one file apart.
    """
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on failure removed."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with suppress(OSError):  # already renamed, or never created
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
