"""The classify job: walk a tree once, skip what is done, decode and predict the rest in batches,
write Parquet parts as it goes, then tidy up and summarise. Resumable, lock-protected and
interruptible; a rerun with nothing new loads no model and reads no Parquet rows (one footer a
part: what cannot be read is quarantined and its files classified again, in the same run)."""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from classify_job.bundle import BundleSpec, read_spec
from classify_job.classify.backends import choose_runtime
from classify_job.classify.config import ClassifyConfig
from classify_job.classify.engines import ENGINES
from classify_job.classify.index import (
    INDEX_DIR,
    OutputIndex,
    PartIndex,
    Quarantined,
    drop_superseded_rows,
    remove_rows,
)
from classify_job.classify.lock import output_lock
from classify_job.classify.merge import restore_interrupted_swap
from classify_job.classify.progress import ProgressCallback, RunProgress
from classify_job.classify.redecide import redecide
from classify_job.classify.rows import RowContext, predictions_table
from classify_job.classify.scan import TreeScan
from classify_job.classify.sink import BackgroundWriter, PartWriter, remove_stale_temp_files
from classify_job.decisions.attributes import attribute_names
from classify_job.decisions.rule import DecisionRule
from classify_job.errors import ErrorRateExceeded, Interrupted, OutputError
from classify_job.loop.drift import record_drift, run_histograms
from classify_job.predictions import (
    PREDICTIONS_DIR,
    TMP_DIR,
    UnreadablePart,
    predictions_schema,
    quarantine_part,
)
from classify_job.report.html import REPORT_HTML, write_html_report
from classify_job.report.summary import (
    SUMMARY_JSON,
    SUMMARY_MD,
    build_summary,
    refresh_summary,
    write_summary,
)
from classify_job.runrecords import RUNS_DIR, iso_utc, latest_run, write_run_record
from classify_job.runtime import peak_rss_mib, xla_settings
from classify_job.walk import FileEntry, require_dir

log = logging.getLogger(__name__)

# Present while a run may have committed parts it has not de-duplicated yet; a crash leaves it.
SUPERSEDING = ".superseding"


@dataclass(frozen=True)
class RunSetup:
    """What one run is given, fixed for its whole length: the settings, the output folder (locked),
    the bundle's spec (read once), where progress goes, the stop flag and the start time."""

    config: ClassifyConfig
    out: Path
    spec: BundleSpec
    on_progress: ProgressCallback
    stop: threading.Event
    started: float


@dataclass
class RunState:
    """One pass of a run as it goes: its id, decision rule, walk, open part writer and counters.
    Passed whole to the loop and the writer thread instead of long argument lists."""

    setup: RunSetup
    run_id: str
    rule: DecisionRule
    scan: TreeScan
    writer: PartWriter
    progress: RunProgress
    timings: dict[str, Any]
    engine_record: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    """What a finished run did, the record it wrote and the summary of the whole output."""

    run_id: str
    out: Path
    progress: RunProgress
    superseded_rows_removed: int
    summary: dict[str, Any]
    record: dict[str, Any]


def run_classify(
    config: ClassifyConfig,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunResult:
    """Classify ``config.input_dir`` into ``config.out``; see docs/output.md for the output contract.

    Raises InputError, BundleError, OutputError or LockHeldError before any work when the
    inputs are wrong; Interrupted when ``stop`` is set (after committing every finished row);
    ErrorRateExceeded after writing everything when too many files failed.
    """
    started = time.monotonic()
    require_dir(config.input_dir, "input directory")  # before anything is created
    config = config.resolve_model()  # once: a promotion during the run cannot switch models
    spec = read_spec(config.model)  # fail fast on a wrong path, before creating anything
    # once, too: the decision rule is the serving graph's, so every engine and actor serves this one
    config = replace(config, runtime=choose_runtime(spec, config.runtime))
    out = _prepare_out(config.out)
    stop = stop or threading.Event()
    with output_lock(out):
        _reset(out, config.fresh)
        result = _run_passes(RunSetup(config, out, spec, on_progress or (lambda p: None), stop, started))
    if stop.is_set():
        raise Interrupted(f"stopped after {result.progress.done} files; rerun to resume")
    _check_error_rate(result.summary, config.max_error_rate)
    return result


def _prepare_out(out: Path) -> Path:
    try:
        (out / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
    return out


def _reset(out: Path, fresh: bool) -> None:
    if fresh:
        for directory in (PREDICTIONS_DIR, RUNS_DIR, INDEX_DIR, TMP_DIR):
            shutil.rmtree(out / directory, ignore_errors=True)
        (out / PREDICTIONS_DIR).mkdir()
        for name in (SUMMARY_JSON, SUMMARY_MD, REPORT_HTML):
            (out / name).unlink(missing_ok=True)
    if restore_interrupted_swap(out):
        log.warning("restored %s: a merge into %s was interrupted before it finished", PREDICTIONS_DIR, out)
    removed = remove_stale_temp_files(out)
    if removed:
        log.info("removed %d unfinished part file(s) left by an interrupted run", removed)


def _run_passes(setup: RunSetup) -> RunResult:
    """Run; a part whose footer was fine but whose rows cannot be read (found while re-deciding,
    pruning or summarising) is quarantined and the run goes again, so its files are redone now."""
    quarantined: list[Quarantined] = []
    while True:
        try:
            return _run_locked(setup, quarantined)
        except UnreadablePart as exc:
            if (
                setup.stop.is_set()
                or exc.part.parent != setup.out / PREDICTIONS_DIR
                or not exc.part.is_file()
            ):
                raise
            quarantine_part(exc.part, exc.reason)
            quarantined.append(Quarantined(exc.part.name, exc.reason, None))


def _run_locked(setup: RunSetup, quarantined: list[Quarantined]) -> RunResult:
    config, out, spec = setup.config, setup.out, setup.spec
    run_id = new_run_id()
    index = OutputIndex.load(out)
    quarantined = quarantined + index.quarantined
    parts, _ = _supersede(out, index.parts) if (out / SUPERSEDING).exists() else (index.parts, 0)
    rule = DecisionRule.from_bundle(config.model, spec, config.runtime)
    parts, redecided = redecide(parts, rule, spec.model_id, config.top_k)
    scan = TreeScan(
        config.input_dir, config.extensions, config.follow_symlinks, config.shard, (config.out,),
        spec.model_id, index.done,
    )  # fmt: skip
    progress = RunProgress(total=_expected_files(out), run_id=run_id)
    log.info(
        "run %s: %d rows already in %s",
        *(run_id, len(index), out),
        extra={"fields": {"event": "run_start", "run_id": run_id, "rows": len(index), "out": str(out)}},
    )
    writer = _part_writer(config, out, spec, run_id, rule)
    _touch(out / SUPERSEDING)
    run = RunState(
        setup, run_id, rule, scan, writer, progress,
        timings={"startup_s": round(time.monotonic() - setup.started, 3)}, engine_record={"runtime": None},
    )  # fmt: skip
    try:
        _classify_batches(run)
    finally:
        writer.commit()  # every finished row is kept, whatever stopped the loop
    parts, superseded = _supersede(out, parts + writer.indexes) if writer.indexes else (parts, 0)
    (out / SUPERSEDING).unlink(missing_ok=True)
    parts, pruned, missing = _missing(scan, parts, config.prune)
    record = _run_record(run, missing, pruned)
    record.update(run.engine_record, redecided=redecided, calibration_id=rule.calibration_id)
    if record.get("runtime") == "keras":  # the kernels XLA compiled the model with
        record["xla"] = xla_settings()
    record.update(quarantined=len(quarantined), quarantined_parts=[q.as_dict() for q in quarantined])
    histograms = run_histograms([p.part for p in writer.indexes], spec.labels, rule.cutoff)
    record.update(record_drift(out, record, histograms, config.drift_runs, config.drift_min_rows))
    write_run_record(out, record)
    changed = writer.indexes or superseded or pruned or redecided or quarantined
    summary = _reports(out, record, (config.model, spec), rows_changed=bool(changed))
    return RunResult(run_id, out, progress, superseded, summary, record)


def _classify_batches(run: RunState) -> None:
    config, spec, scan, progress = run.setup.config, run.setup.spec, run.scan, run.progress
    todo = scan.todo()
    first = next(todo, None)
    progress.skipped = scan.skipped
    if first is not None:  # only now is a model needed
        ctx = RowContext(spec.labels, spec.model_id, run.run_id, config.top_k, run.rule)
        progress.started = time.monotonic()
        rows = BackgroundWriter(lambda item: _write_rows(item, ctx, run))
        entries = _counted(chain([first], todo), scan, progress)
        engine = ENGINES[config.engine]
        with _closing(rows):
            for item in engine(config, spec, entries, ctx, run.writer.schema, run.engine_record):
                rows.put(item)
                if run.setup.stop.is_set():
                    log.warning("stop requested: committing finished rows and exiting")
                    break
        run.timings["loop_s"] = round(time.monotonic() - progress.started, 3)  # model load to last row
    progress.skipped = scan.skipped
    if scan.complete:
        progress.total = scan.found
    run.setup.on_progress(progress)


def _write_rows(item: Any, ctx: RowContext, run: RunState) -> None:
    """On the writer thread: the rows of one batch into the open part, and the counters."""
    progress, writer = run.progress, run.writer
    table = (
        item
        if isinstance(item, pa.Table)
        else predictions_table(item.batch, item.probs, item.features, ctx, writer.schema)
    )
    if "first_batch_s" not in run.timings:
        run.timings.update(
            first_batch_s=round(time.monotonic() - progress.started, 3), first_batch_at=time.time()
        )
    writer.write(table)
    progress.classified += table.num_rows
    progress.errors += pc.sum(pc.equal(table.column("status"), "error")).as_py() or 0
    run.setup.on_progress(progress)


@contextmanager
def _closing(rows: BackgroundWriter) -> Iterator[None]:
    """Close the writer thread after the loop; if the loop failed, its error wins."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            rows.close()
        raise
    rows.close()


def _counted(todo: Iterator[FileEntry], scan: TreeScan, progress: RunProgress) -> Iterator[FileEntry]:
    for entry in todo:
        progress.skipped = scan.skipped
        yield entry


def _supersede(out: Path, parts: list[PartIndex]) -> tuple[list[PartIndex], int]:
    """Drop rows a newer row of the same relpath replaced (after this run, or after a crash)."""
    parts, removed = drop_superseded_rows(parts)
    if removed:
        log.info("removed %d row(s) superseded by newer rows in %s", removed, out)
    return parts, removed


def _missing(scan: TreeScan, parts: list[PartIndex], prune: bool) -> tuple[list[PartIndex], int, int | None]:
    """(parts, rows pruned, rows still missing): rows whose file is gone are counted (None when
    the walk did not finish) and, with ``prune``, removed."""
    if not scan.complete:
        return parts, 0, None
    gone = scan.missing(parts)
    missing = sum(int(mask.sum()) for _, mask in gone)
    if not prune or not missing:
        return parts, 0, missing
    replaced = {part.part: remove_rows(part, mask) for part, mask in gone}
    kept = [replaced.get(p.part, p) for p in parts]
    return [p for p in kept if p is not None], missing, 0  # a part left without rows is deleted


def _reports(
    out: Path, record: dict[str, Any], bundle: tuple[Path, BundleSpec], rows_changed: bool
) -> dict[str, Any]:
    """Rebuild summary and report when rows changed; otherwise refresh the summary's run record,
    and rebuild the report if it is missing (its last write failed, or someone deleted it)."""
    if not rows_changed and (summary := refresh_summary(out, record)) is not None:
        if not (out / REPORT_HTML).is_file() and any((out / PREDICTIONS_DIR).glob("part-*.parquet")):
            write_html_report(out, summary, bundle=bundle)
        return summary
    if not any((out / PREDICTIONS_DIR).glob("part-*.parquet")):
        return {}
    summary = write_summary(out, build_summary(out, record))
    write_html_report(out, summary, bundle=bundle)
    return summary


def _touch(path: Path) -> None:
    try:
        path.touch()
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _expected_files(out: Path) -> int | None:
    previous = latest_run(out)
    return previous.get("found") if previous else None


def _run_record(run: RunState, missing: int | None, pruned: int) -> dict[str, Any]:
    config, spec, scan, started = run.setup.config, run.setup.spec, run.scan, run.setup.started
    return {
        "run_id": run.run_id,
        "started_at": iso_utc(time.time() - (time.monotonic() - started), "milliseconds"),
        "finished_at": iso_utc(time.time(), "milliseconds"),
        "elapsed_s": round(time.monotonic() - started, 3),
        "input_dir": str(config.input_dir.absolute()),
        "model_path": str(config.model.absolute()),
        "model_requested": str(config.model_requested or config.model.absolute()),
        "model_id": spec.model_id,
        "shard": str(config.shard),
        "engine": config.engine,
        "complete": scan.complete,
        "found": scan.found,
        "classified": run.progress.classified,
        "errors": run.progress.errors,
        "skipped": scan.skipped,
        "missing": missing,
        "pruned": pruned,
        "ignored_extensions": dict(sorted(scan.stats.ignored.items())),
        "unlisted_dirs": scan.stats.unlisted,
        "timings": run.timings,
        "peak_rss_mib": peak_rss_mib(),
    }


def _part_writer(
    config: ClassifyConfig, out: Path, spec: BundleSpec, run_id: str, rule: DecisionRule
) -> PartWriter:
    record = {
        "run_started_at": time.time(),
        "model_id": spec.model_id,
        "model_path": str(config.model.absolute()),
        "model_requested": str(config.model_requested or config.model.absolute()),
        "input_dir": str(config.input_dir.absolute()),
        "shard": str(config.shard),
        "labels": list(spec.labels),
        "calibration_id": rule.calibration_id,  # the serving graph's: what redecide compares
    }
    return PartWriter(
        out,
        predictions_schema(spec.labels, attribute_names(spec)),
        run_id,
        record,
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
