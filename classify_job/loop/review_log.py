"""``DATA/.review-log.csv``: the append-only record of what review imports changed in DATA.

Appended and synced row by row, right after each change (or, for a new image, before the rename
that makes it visible), so the log matches DATA even after a kill; a line cut short by a crash is
ended before the next is written.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classify_job.errors import InputError, OutputError

LOG_NAME = ".review-log.csv"
LOG_COLUMNS = (
    *("when", "action", "review", "source", "entry", "sha256", "predicted_label"),
    *("old_label", "new_label", "path", "old_path"),
)


class ReviewLog:
    """The append-only CSV of changes. Appended row by row, right after each change, so the log
    matches DATA even if an import stops halfway; a reject already logged is not logged again."""

    def __init__(self, path: Path) -> None:
        self.path, self.when, self.handle = path, datetime.now(UTC).isoformat(timespec="seconds"), None
        rows = read_log(path)
        self.rejected = {(r["sha256"], r["entry"]) for r in rows if r.get("action") == "reject"}
        # (action, path, old_path) of the latest line per image: a relabel logged by a run that
        # was killed before its move is finished, not logged twice
        self.last = {r["sha256"]: (r.get("action"), r.get("path"), r.get("old_path")) for r in rows}

    def __enter__(self) -> ReviewLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()

    def reject(self, item: Any, held_as: str) -> None:
        if (item.file.sha256, item.row["entry"]) not in self.rejected:
            self.rejected.add((item.file.sha256, item.row["entry"]))
            self.write("reject", item, held_as, None)

    def write(self, action: str, item: Any, old_label: str, path: Path | None, old: Path | None = None):
        data = self.path.parent
        row = (
            self.when, action, item.review, item.row["source_path"], item.row["entry"], item.file.sha256,
            item.row["predicted_label"], old_label, item.label, rel(path, data), rel(old, data),
        )  # fmt: skip
        with self._writer() as writer:
            writer.writerow(row)
        self.last[item.file.sha256] = (action, row[9], row[10])

    @contextmanager
    def _writer(self) -> Iterator[Any]:
        try:
            if self.handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                new = not self.path.exists() or self.path.stat().st_size == 0
                torn = not new and _ends_unterminated(self.path)
                self.handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
                if new:
                    csv.writer(self.handle, lineterminator="\n").writerow(LOG_COLUMNS)
                elif torn:
                    self.handle.write("\n")  # a line cut short by a crash stays apart from the next
            yield csv.writer(self.handle, lineterminator="\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write the review log {self.path}: {exc.strerror or exc}") from exc


def _ends_unterminated(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def read_log(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the review log {path}: {exc}") from exc


def rel(path: Path | None, root: Path) -> str:
    return "" if path is None else path.relative_to(root).as_posix()
