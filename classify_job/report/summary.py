"""Run summaries built from the Parquet output alone, so ``classify-job report OUT`` can always
rebuild them: ``summary.json`` for machines and ``summary.md`` for people."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from classify_job import atomic
from classify_job.predictions import iter_batches, read_part_metadata, require_predictions

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
_COLUMNS = ("status", "label", "error", "run_id", "model_id", "classified_at")


def build_summary(out: Path) -> dict[str, Any]:
    """Counts over the whole dataset, plus the facts of the latest run that wrote rows.

    ``skipped`` counts rows the latest run kept from earlier runs instead of redoing them.
    """
    parts = require_predictions(out)
    totals = _Totals()
    for _, batch in iter_batches(out, _COLUMNS, parts=parts):
        totals.add(batch)
    return _summary_dict(totals, read_part_metadata(parts[-1]))


def write_summary(out: Path) -> dict[str, Any]:
    """Build the summary and write ``summary.json`` and ``summary.md`` atomically."""
    summary = build_summary(out)
    atomic.write_json(out / SUMMARY_JSON, summary)
    atomic.write_text(out / SUMMARY_MD, render_markdown(summary))
    return summary


class _Totals:
    """Streaming aggregation over record batches."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.runs: Counter[str] = Counter()
        self.models: Counter[str] = Counter()
        self.last_classified: dict[str, int] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        for name, counter in (
            ("status", self.status),
            ("label", self.labels),
            ("error", self.errors),
            ("run_id", self.runs),
            ("model_id", self.models),
        ):
            counter.update(_value_counts(batch.column(name)))
        times = pc.cast(batch.column("classified_at"), pa.int64())
        for run in set(batch.column("run_id").to_pylist()):
            in_run = pc.filter(times, pc.equal(batch.column("run_id"), run))
            latest = pc.max(in_run).as_py()
            self.last_classified[run] = max(latest, self.last_classified.get(run, latest))


def _value_counts(column: pa.Array) -> dict[str, int]:
    counts = pc.value_counts(column.drop_null()).to_pylist()
    return {item["values"]: item["counts"] for item in counts}


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


def _run_elapsed(latest: dict[str, Any], last_row_us: int | None) -> float:
    started = latest.get("run_started_at")
    if started is None or last_row_us is None:
        return 0.0
    return max(last_row_us / 1e6 - started, 0.0)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


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
    if summary["error_reasons"]:
        lines += ["", "| error | files |", "| --- | ---: |"]
        lines += [f"| {reason} | {n} |" for reason, n in summary["error_reasons"].items()]
    return "\n".join(lines) + "\n"
