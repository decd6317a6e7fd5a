"""The classify job: walk a tree, skip what is done, decode and predict in batches, write
Parquet parts as it goes, then summarise. Resumable, lock-protected and interruptible."""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from classify_job.bundle import Bundle, load_bundle, read_spec
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.engines import ENGINES
from classify_job.classify.lock import output_lock
from classify_job.classify.resume import ResumeIndex, drop_superseded_rows
from classify_job.classify.scan import scan_tree
from classify_job.classify.sink import PartWriter, RowContext, remove_stale_temp_files
from classify_job.errors import ErrorRateExceeded, InputError, Interrupted, OutputError
from classify_job.predictions import PREDICTIONS_DIR, list_parts, predictions_schema
from classify_job.report.html import REPORT_HTML, write_html_report
from classify_job.report.summary import SUMMARY_JSON, SUMMARY_MD, write_summary
from classify_job.walk import FileEntry

log = logging.getLogger(__name__)


@dataclass
class RunProgress:
    """Live counters of one run, handed to the progress callback after every batch."""

    total: int
    run_id: str = ""
    started: float = field(default_factory=time.monotonic)
    skipped: int = 0
    classified: int = 0
    errors: int = 0

    @property
    def done(self) -> int:
        return self.skipped + self.classified

    @property
    def images_per_second(self) -> float:
        return self.classified / max(time.monotonic() - self.started, 1e-9)

    def fields(self) -> dict[str, Any]:
        """Structured log fields (JSON log lines carry them as keys)."""
        keys = ("run_id", "total", "done", "classified", "skipped", "errors")
        return {**{k: getattr(self, k) for k in keys}, "images_per_second": round(self.images_per_second, 2)}


@dataclass(frozen=True)
class RunResult:
    """What a finished run did, and the summary of the whole output directory."""

    run_id: str
    out: Path
    progress: RunProgress
    superseded_rows_removed: int
    summary: dict[str, Any]


ProgressCallback = Callable[[RunProgress], None]


def run_classify(
    config: ClassifyConfig,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunResult:
    """Classify ``config.input_dir`` into ``config.out``; see the README for the output contract.

    Raises InputError, BundleError, OutputError or LockHeldError before any work when the
    inputs are wrong; Interrupted when ``stop`` is set (after committing every finished row);
    ErrorRateExceeded after writing everything when too many files failed.
    """
    if not config.input_dir.is_dir():
        raise InputError(f"input directory not found: {config.input_dir}")
    read_spec(config.model)  # fail fast on a wrong path, before creating anything
    out = _prepare_out(config.out)
    with output_lock(out):
        _reset_or_heal(out, config.fresh)
        bundle = load_bundle(config.model)
        result = _run_locked(config, out, bundle, on_progress or (lambda p: None), stop or threading.Event())
    if stop is not None and stop.is_set():
        raise Interrupted(f"stopped after {result.progress.done} files; rerun to resume")
    _check_error_rate(result.summary, config.max_error_rate)
    return result


def _prepare_out(out: Path) -> Path:
    try:
        (out / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
    return out


def _reset_or_heal(out: Path, fresh: bool) -> None:
    if fresh:
        shutil.rmtree(out / PREDICTIONS_DIR)
        (out / PREDICTIONS_DIR).mkdir()
        for name in (SUMMARY_JSON, SUMMARY_MD, REPORT_HTML):
            (out / name).unlink(missing_ok=True)
    removed = remove_stale_temp_files(out)
    if removed:
        log.info("removed %d unfinished part file(s) left by an interrupted run", removed)


def _run_locked(
    config: ClassifyConfig, out: Path, bundle: Bundle, on_progress: ProgressCallback, stop: threading.Event
) -> RunResult:
    drop_superseded_rows(out)  # heals a run that died between committing and de-duplicating
    index = ResumeIndex.from_output(out)
    run_id = new_run_id()
    progress = RunProgress(total=sum(1 for _ in _scan(config)), run_id=run_id)
    log.info(
        "run %s: %d files found, %d rows already in %s",
        run_id,
        progress.total,
        len(index),
        out,
        extra={"fields": {"event": "run_start", "run_id": run_id, "files": progress.total, "out": str(out)}},
    )
    todo = _skip_done(_scan(config), index, bundle.spec.model_id, progress)
    writer = _part_writer(config, out, bundle, run_id)
    try:
        _classify_batches(config, bundle, todo, writer, run_id, progress, on_progress, stop)
    finally:
        writer.commit()  # every finished row is kept, whatever stopped the loop
    removed = drop_superseded_rows(out) if writer.parts else 0
    summary = {}
    if list_parts(out):
        summary = write_summary(out)
        write_html_report(out, summary)
    return RunResult(run_id, out, progress, removed, summary)


def _classify_batches(config, bundle, todo, writer, run_id, progress, on_progress, stop) -> None:
    ctx = RowContext(bundle.spec.labels, bundle.spec.model_id, run_id, config.top_k)
    progress.started = time.monotonic()
    for table in ENGINES[config.engine](config, bundle, todo, ctx, writer.schema):
        writer.write(table)
        progress.classified += table.num_rows
        progress.errors += pc.sum(pc.equal(table.column("status"), "error")).as_py() or 0
        on_progress(progress)
        if stop.is_set():
            log.warning("stop requested: committing finished rows and exiting")
            break
    on_progress(progress)


def _skip_done(
    entries: Iterator[FileEntry], index: ResumeIndex, model_id: str, progress: RunProgress
) -> Iterator[FileEntry]:
    for entry in entries:
        if entry.stat_error is None and index.is_done(entry, model_id):
            progress.skipped += 1
        else:
            yield entry


def _scan(config: ClassifyConfig) -> Iterator[FileEntry]:
    return scan_tree(config.input_dir, config.extensions, config.follow_symlinks, config.shard, (config.out,))


def _part_writer(config: ClassifyConfig, out: Path, bundle: Bundle, run_id: str) -> PartWriter:
    facts = {
        "run_started_at": time.time(),
        "model_id": bundle.spec.model_id,
        "model_path": str(config.model.absolute()),
        "input_dir": str(config.input_dir.absolute()),
        "shard": str(config.shard),
        "labels": list(bundle.spec.labels),
    }
    return PartWriter(
        out,
        predictions_schema(bundle.spec.labels),
        run_id,
        facts,
        config.rows_per_part,
        config.commit_every_s,
    )


def new_run_id() -> str:
    """Sortable by start time, unique across machines: ``20261122T031500123456Z-1a2b3c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


def _check_error_rate(summary: dict[str, Any], limit: float | None) -> None:
    if limit is None or not summary.get("files"):
        return
    rate = summary["errors"] / summary["files"]
    if rate > limit:
        raise ErrorRateExceeded(
            f"{summary['errors']} of {summary['files']} files failed ({rate:.1%}), "
            f"over the --max-error-rate limit of {limit:.1%}; results are written"
        )
