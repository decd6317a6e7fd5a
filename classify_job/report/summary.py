"""Run summaries built from the output directory alone (Parquet rows and ``runs/`` record), so
``classify-job report OUT`` can always rebuild them: ``summary.json`` for machines and
``summary.md`` for people."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from classify_job import atomic
from classify_job.decisions.attributes import attribute_columns
from classify_job.decisions.rule import ACCEPT, DECISION_COLUMNS, REVIEW, stored_decisions
from classify_job.loop.drift import describe, latest_drift
from classify_job.predictions import (
    attributes_of,
    iter_batches,
    quarantined_parts,
    read_part_metadata,
    require_predictions,
    value_counts,
)
from classify_job.runrecords import iso_utc, latest_run

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
_COLUMNS = ("label", "error", "run_id", "model_id", "classified_at", *DECISION_COLUMNS)


def build_summary(out: Path, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts over the whole dataset, the record of the latest run that wrote rows, and what the
    latest run of all saw of the tree (missing files, skipped extensions, ...): ``record``, when
    the caller is that run, else read from ``OUT/runs/``.

    ``skipped`` counts rows the latest run that wrote rows kept from earlier runs.
    """
    parts = require_predictions(out)
    totals = _Totals()
    for _, batch in iter_batches(out, _COLUMNS, probs=True, parts=parts, attributes=True):
        totals.add(batch)
    summary = _summary_dict(totals, read_part_metadata(parts[-1]))
    return with_run_record(out, summary, latest_run(out) if record is None else record, latest_drift(out))


def with_run_record(
    out: Path, summary: dict[str, Any], record: dict[str, Any] | None, drift: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``summary`` with the tree record of the latest run (any run, even one that wrote nothing),
    ``drift``, the latest comparison with earlier runs (:mod:`classify_job.loop.drift`), and
    the unreadable parts: moved to ``OUT/quarantine/`` by the latest run, and waiting there now."""
    record = record or {}
    return {
        **summary,
        "missing": record.get("missing"),
        "ignored_extensions": record.get("ignored_extensions", {}),
        "unlisted_dirs": record.get("unlisted_dirs", {}),
        "runtime": record.get("runtime"),
        "quarantined": record.get("quarantined", 0),
        "quarantined_total": quarantined_parts(out),
        "last_run": {k: record.get(k) for k in LAST_RUN_KEYS} if record else None,
        "drift": drift,
        "generated_at": _iso(datetime.now(UTC).timestamp()),
    }


LAST_RUN_KEYS = (
    "run_id", "found", "classified", "skipped", "missing", "pruned", "quarantined", "elapsed_s", "complete",
)  # fmt: skip


def write_summary(out: Path, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md`` atomically (building the summary when not given)."""
    summary = build_summary(out) if summary is None else summary
    atomic.write_json(out / SUMMARY_JSON, summary)
    atomic.write_text(out / SUMMARY_MD, render_markdown(summary))
    return summary


def refresh_summary(out: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """After a run that changed no row: the stored summary with this run's record, without
    reading Parquet. None when there is no stored summary to refresh."""
    try:
        stored = json.loads((out / SUMMARY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return write_summary(out, with_run_record(out, stored, record, latest_drift(out)))


class _Totals:
    """Streaming aggregation over record batches."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.runs: Counter[str] = Counter()
        self.models: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.attributes: dict[str, Counter[str]] = {}
        self.last_classified: dict[str, int] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        for name, counter in (
            ("status", self.status),
            ("label", self.labels),
            ("error", self.errors),
            ("run_id", self.runs),
            ("model_id", self.models),
        ):
            counter.update(value_counts(batch.column(name)))
        decision, reason = stored_decisions(batch)
        self.decisions.update(d for d in decision if d is not None)
        self.reasons.update(part for r in reason if r for part in r.split("; "))
        for name in attributes_of(batch.schema):
            column = batch.column(attribute_columns(name)[2])
            self.attributes.setdefault(name, Counter()).update(value_counts(column))
        times = pc.cast(batch.column("classified_at"), pa.int64())
        for run in set(batch.column("run_id").to_pylist()):
            in_run = pc.filter(times, pc.equal(batch.column("run_id"), run))
            latest = pc.max(in_run).as_py()
            self.last_classified[run] = max(latest, self.last_classified.get(run, latest))


def _summary_dict(totals: _Totals, latest: dict[str, Any]) -> dict[str, Any]:
    files = sum(totals.status.values())
    run_id = latest.get("run_id")
    run_rows = totals.runs.get(run_id, 0)
    elapsed = _run_elapsed(latest, totals.last_classified.get(run_id))
    return {
        "files": files,
        "ok": totals.status.get("ok", 0),
        "errors": totals.status.get("error", 0),
        "skipped": files - run_rows,
        "labels": dict(sorted(totals.labels.items())),
        "error_reasons": dict(totals.errors.most_common(10)),
        "decisions": {d: totals.decisions.get(d, 0) for d in (ACCEPT, REVIEW)},
        "review_reasons": dict(totals.reasons.most_common()),
        "attributes": {name: _coverage(counts) for name, counts in sorted(totals.attributes.items())},
        "images_per_second": round(run_rows / elapsed, 2) if elapsed else 0.0,
        "elapsed_s": round(elapsed, 3),
        "model_id": latest.get("model_id"),
        "model_ids": sorted(totals.models),
        "run_id": run_id,
        "runs": len(totals.runs),
        "classified_in_run": run_rows,
        "input_dir": latest.get("input_dir"),
        "shard": latest.get("shard"),
        "run_started_at": _iso(latest.get("run_started_at")),
        "generated_at": _iso(datetime.now(UTC).timestamp()),
    }


def _coverage(counts: Counter[str]) -> dict[str, Any]:
    """An attribute's decisions: how many accepted, how many to review, the share accepted."""
    accepted, review = counts.get(ACCEPT, 0), counts.get(REVIEW, 0)
    share = round(accepted / (accepted + review), 4) if accepted + review else None
    return {ACCEPT: accepted, REVIEW: review, "share_accepted": share}


def _run_elapsed(latest: dict[str, Any], last_row_us: int | None) -> float:
    started = latest.get("run_started_at")
    if started is None or last_row_us is None:
        return 0.0
    return max(last_row_us / 1e6 - started, 0.0)


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else iso_utc(timestamp)


def render_markdown(summary: dict[str, Any]) -> str:
    """A short human-readable report of a summary dict."""
    lines = [
        "# classify-job summary",
        "",
        f"- input: `{summary['input_dir']}` (shard {summary['shard']})",
        f"- model: `{summary['model_id']}`; run `{summary['run_id']}` of {summary['runs']}",
        f"- files: {summary['files']} ({summary['ok']} ok, {summary['errors']} errors, "
        f"{summary['skipped']} kept from earlier runs)",
        f"- latest run: {summary['classified_in_run']} files in {summary['elapsed_s']} s "
        f"({summary['images_per_second']} images/s)",
        "",
        "| label | images | share |",
        "| --- | ---: | ---: |",
    ]
    ok = max(summary["ok"], 1)
    lines += [f"| {label} | {n} | {n / ok:.1%} |" for label, n in summary["labels"].items()]
    decisions = summary.get("decisions") or {}
    if decisions:
        lines += [
            "",
            f"- decisions: {decisions.get(ACCEPT, 0)} accepted, {decisions.get(REVIEW, 0)} to review",
        ]
        lines += [f"  - {reason}: {n}" for reason, n in (summary.get("review_reasons") or {}).items()]
    attributes = summary.get("attributes") or {}
    if attributes:
        lines += ["", "| attribute | accepted | to review | share accepted |", "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {name} | {a[ACCEPT]} | {a[REVIEW]} | {_share(a['share_accepted'])} |"
            for name, a in attributes.items()
        ]
    if summary["error_reasons"]:
        lines += ["", "| error | files |", "| --- | ---: |"]
        lines += [f"| {reason} | {n} |" for reason, n in summary["error_reasons"].items()]
    return "\n".join(lines + _drift_lines(summary) + _tree_lines(summary)) + "\n"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _drift_lines(summary: dict[str, Any]) -> list[str]:
    drift = summary.get("drift")
    if not drift:
        return ["", "- drift: no comparison with earlier runs recorded in this output"]
    line = describe(drift)
    if not drift.get("new"):
        line += " (the latest run classified nothing readable: no new flag)"
    return ["", f"- {line}"]


def _tree_lines(summary: dict[str, Any]) -> list[str]:
    """What the latest run saw of the tree beyond the rows: gone, ignored and unlisted."""
    lines = []
    if summary.get("quarantined_total"):
        lines.append(
            f"- {summary['quarantined_total']:,} unreadable part file(s) in `quarantine/` "
            f"({summary.get('quarantined') or 0} moved there by the latest run, "
            "which classified their files again)"
        )
    if summary.get("missing"):
        lines.append(
            f"- {summary['missing']:,} files with a row are gone (`classify --prune` removes their rows)"
        )
    for extension, count in sorted((summary.get("ignored_extensions") or {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"- {count:,} {extension or '(no extension)'} files ignored (not in --ext)")
    for directory, reason in (summary.get("unlisted_dirs") or {}).items():
        lines.append(f"- cannot list `{directory}`: {reason}")
    return ["", "## The tree", "", *lines] if lines else []
