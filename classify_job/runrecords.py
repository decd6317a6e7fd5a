"""``OUT/runs/<run_id>.json``: what each classify run saw and did that Parquet rows cannot hold.

Rows get superseded by later runs; these records stay: files found, skipped by extension and
missing, directories that could not be listed, the runtime used and timings. The summary reads
the latest; drift compares runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classify_job import atomic

log = logging.getLogger(__name__)

RUNS_DIR = "runs"


def write_run_record(out: Path, record: dict[str, Any]) -> Path:
    """Write one run's record atomically (``record["run_id"]`` names the file)."""
    path = Path(out) / RUNS_DIR / f"{record['run_id']}.json"
    atomic.write_json(path, record)
    return path


def read_runs(out: Path, last: int | None = None) -> list[dict[str, Any]]:
    """Facts of the runs on ``out``, oldest first (run ids sort by start time); ``last`` keeps
    only the newest N. A file that cannot be read is skipped with a warning."""
    paths = sorted((Path(out) / RUNS_DIR).glob("*.json"))
    return [record for path in (paths[-last:] if last else paths) if (record := _read(path)) is not None]


def iter_runs(out: Path, newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """Facts of the runs on ``out`` one by one, read only as far as the caller goes."""
    paths = sorted((Path(out) / RUNS_DIR).glob("*.json"))
    for path in reversed(paths) if newest_first else paths:
        if (record := _read(path)) is not None:
            yield record


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable run record %s: %s", path, exc)
        return None
    if not isinstance(record, dict):
        log.warning("skipping run record %s: not a JSON object", path)
        return None
    return record


def latest_run(out: Path) -> dict[str, Any] | None:
    """The newest run's record, or None before the first run."""
    runs = read_runs(out, last=1)
    return runs[-1] if runs else None


def iso_utc(timestamp: float, timespec: str = "seconds") -> str:
    """A POSIX timestamp as the ISO 8601 UTC text runs and summaries record."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec=timespec)
