"""Drift between runs: does this run's data look like the data of the runs before it?

A rerun's rows are only the new and changed files, so each run is compared with the runs before
it on the same OUT, the same model and the same calibration (calibrated confidences and the
unfamiliar cut-off change with it). Superseded rows vanish from the Parquet dataset, so every run
keeps the histograms of the readable rows it wrote in ``OUT/runs/<run_id>.json``, and the
comparison reads only those: label shares, the calibrated-confidence histogram and, where the
bundle has one, the unfamiliar-score histogram. Runs that recorded no histograms (written before
drift existed, or that classified nothing readable) are not part of any reference.

Each signal gets a population stability index, PSI = sum((p - q) * ln(p / q)) over the bins,
``p`` this run's shares and ``q`` the shares of the reference runs pooled. An empty bin would make
it infinite, so both sides get the same pseudo-share added to every bin, half a row of the smaller
side (0.5 / min(n, m)), before the shares are renormalised: a bin empty on both sides adds
nothing, two histograms of the same shape give 0 whatever their sizes, and a bin holding a few
rows on one side only costs about what those few rows weigh, not an arbitrary constant's log.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from classify_job.errors import InputError
from classify_job.predictions import read_part, value_counts
from classify_job.runrecords import iter_runs

log = logging.getLogger(__name__)

CONFIDENCE_EDGES = tuple(i / 10 for i in range(11))  # ten bins over [0, 1], the last closed at 1
# Multiples of the bundle's cut-off (a high quantile of familiar images' scores, so most of them
# fall in the four bins below it); the last bin is open (written as a null edge). Few bins: by
# chance alone two samples of n and m rows differ by a PSI of about (bins - 1)(1/n + 1/m).
UNFAMILIAR_MULTIPLES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0)
WATCH_AT, ALERT_AT = 0.1, 0.25
NONE, WATCH, ALERT, NOT_ENOUGH = "none", "watch", "alert", "not enough data"
SIGNALS = ("labels", "confidence", "unfamiliar")
MOVED_SHOWN = 5  # label shares listed as "moved most"


def unfamiliar_edges(cutoff: float) -> list[float | None]:
    """The unfamiliar-score bin edges of a bundle: fixed multiples of its cut-off, last bin open."""
    return [round(m * float(cutoff), 6) for m in UNFAMILIAR_MULTIPLES] + [None]


class RunHistograms:
    """The counts one run's readable rows add up to, table by table (:func:`run_histograms`)."""

    def __init__(self, labels: Sequence[str], unfamiliar_cutoff: float | None = None) -> None:
        self.rows = 0
        self.labels: Counter[str] = Counter(dict.fromkeys(labels, 0))
        self.confidence = np.zeros(len(CONFIDENCE_EDGES) - 1, np.int64)
        self.unfamiliar_edges = self.unfamiliar = None
        if unfamiliar_cutoff is not None:
            self.unfamiliar_edges = unfamiliar_edges(unfamiliar_cutoff)
            self.unfamiliar = np.zeros(len(UNFAMILIAR_MULTIPLES), np.int64)

    def add(self, table: pa.Table) -> None:
        """Count the rows of ``table`` whose status is ok (error rows are counted by the summary)."""
        ok = table.filter(pc.fill_null(pc.equal(table.column("status"), "ok"), False))
        self.rows += ok.num_rows
        self.labels.update(value_counts(ok.column("label")))
        self.confidence += bin_counts(_values(ok.column("confidence")), CONFIDENCE_EDGES)
        if self.unfamiliar is not None:
            self.unfamiliar += bin_counts(_values(ok.column("unfamiliar_score")), self.unfamiliar_edges)

    def to_json(self) -> dict[str, Any] | None:
        """What ``runs/<run_id>.json`` keeps: rows, counts and bin edges; None when no row was readable."""
        if not self.rows:
            return None
        data: dict[str, Any] = {
            "rows": self.rows,
            "labels": dict(sorted(self.labels.items())),
            "confidence": {"edges": list(CONFIDENCE_EDGES), "counts": self.confidence.tolist()},
        }
        if self.unfamiliar is not None:
            data["unfamiliar"] = {"edges": self.unfamiliar_edges, "counts": self.unfamiliar.tolist()}
        return data


def run_histograms(
    parts: Iterable[Path], labels: Sequence[str], unfamiliar_cutoff: float | None
) -> RunHistograms:
    """The histograms of the rows one run committed in ``parts``, read back after the run: the
    three or four columns they need, off the classify loop and its writer thread."""
    histograms = RunHistograms(labels, unfamiliar_cutoff)
    columns = ["status", "label", "confidence"] + (
        ["unfamiliar_score"] if unfamiliar_cutoff is not None else []
    )
    for part in parts:
        histograms.add(read_part(part, columns))
    return histograms


def _values(column: pa.ChunkedArray) -> np.ndarray:
    values = column.drop_null().to_numpy().astype(np.float64)
    return values[~np.isnan(values)]


def bin_counts(values: np.ndarray, edges: Sequence[float | None]) -> np.ndarray:
    """Counts of ``values`` in the bins between ``edges``; values outside fall in the end bins."""
    inner = np.asarray(edges[1:-1], np.float64)
    return np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)


def psi(current: Sequence[float], reference: Sequence[float], smoothing: float | None = None) -> float:
    """Population stability index of two histograms of counts over the same bins. ``smoothing``
    is the share added to every bin on both sides; default half a row of the smaller side."""
    current, reference = np.asarray(current, np.float64), np.asarray(reference, np.float64)
    if current.shape != reference.shape or not (current.sum() > 0 and reference.sum() > 0):
        raise InputError(
            f"PSI needs two histograms over the same bins, each with rows. "
            f"Received: {current} and {reference}"
        )
    if smoothing is None:
        smoothing = 0.5 / min(current.sum(), reference.sum())
    p, q = _shares(current, smoothing), _shares(reference, smoothing)
    return float(np.sum((p - q) * np.log(p / q)))


def _shares(counts: np.ndarray, smoothing: float) -> np.ndarray:
    return (counts / counts.sum() + smoothing) / (1 + smoothing * len(counts))


def flag_of(value: float | None) -> str:
    """none below 0.1, watch from 0.1, alert from 0.25; not enough data without a value."""
    if value is None:
        return NOT_ENOUGH
    return ALERT if value >= ALERT_AT else WATCH if value >= WATCH_AT else NONE


def compare(current: dict[str, Any], earlier: Sequence[dict[str, Any]], min_rows: int) -> dict[str, Any]:
    """This run's histograms (``current["histograms"]``) against the pooled histograms of the
    ``earlier`` runs' records, signal by signal; each side needs ``min_rows`` rows for a flag."""
    mine = current["histograms"]
    theirs = [run["histograms"] for run in earlier]
    signals = {"labels": _compare_labels(mine["labels"], [h["labels"] for h in theirs], min_rows)}
    for name in SIGNALS[1:]:
        if name in mine:
            signals[name] = _compare_bins(mine[name], [h.get(name) for h in theirs], min_rows)
    return {
        "run_id": current["run_id"],
        "model_id": current.get("model_id"),
        "calibration_id": current.get("calibration_id"),
        "reference_run_ids": [run["run_id"] for run in earlier],
        "min_rows": min_rows,
        "signals": signals,
        "flag": worst_flag(s["flag"] for s in signals.values()),
    }


def _compare_labels(mine: dict[str, int], theirs: list[dict[str, int]], min_rows: int) -> dict[str, Any]:
    pooled: Counter[str] = Counter(dict.fromkeys(mine, 0))
    for counts in theirs:
        pooled.update(counts)
    names = sorted(pooled)
    current = np.array([mine.get(n, 0) for n in names], np.float64)
    reference = np.array([pooled[n] for n in names], np.float64)
    signal = _signal(current, reference, min_rows)
    if current.sum() and reference.sum():
        now, before = current / current.sum(), reference / reference.sum()
        order = np.argsort(-np.abs(now - before), kind="stable")[:MOVED_SHOWN]
        signal["moved"] = [
            {
                "label": names[i],
                "share": round(float(now[i]), 4),
                "reference_share": round(float(before[i]), 4),
            }
            for i in order
            if now[i] != before[i]
        ]
    return signal


def _compare_bins(mine: dict[str, Any], theirs: list[dict[str, Any] | None], min_rows: int) -> dict[str, Any]:
    """A binned signal; earlier histograms with other bin edges are not part of the reference."""
    same = [h["counts"] for h in theirs if h and h.get("edges") == mine["edges"]]
    reference = np.sum(same, axis=0) if same else np.zeros(len(mine["counts"]))
    return _signal(mine["counts"], reference, min_rows)


def _signal(current: Sequence[float], reference: Sequence[float], min_rows: int) -> dict[str, Any]:
    rows, reference_rows = int(np.sum(current)), int(np.sum(reference))
    enough = rows >= min_rows and reference_rows >= min_rows
    value = round(psi(current, reference), 4) if enough else None
    # The PSI two samples of the same data show by chance, about (bins - 1)(1/n + 1/m).
    bins = int(np.count_nonzero(np.asarray(current) + np.asarray(reference)))
    chance = round(max(bins - 1, 0) * (1 / rows + 1 / reference_rows), 4) if enough else None
    return {
        "psi": value,
        "flag": flag_of(value),
        "rows": rows,
        "reference_rows": reference_rows,
        "psi_by_chance": chance,
    }


def worst_flag(flags: Iterable[str]) -> str:
    """alert over watch over none; not enough data only when no signal had enough."""
    flags = set(flags)
    return next((f for f in (ALERT, WATCH, NONE) if f in flags), NOT_ENOUGH)


def reference_runs(out: Path, current: dict[str, Any], runs: int) -> list[dict[str, Any]]:
    """The newest ``runs`` earlier runs on ``out`` with histograms of the same model and
    calibration, oldest first."""
    found = []
    for record in iter_runs(out, newest_first=True):
        if len(found) == runs:
            break
        if (
            _well_formed(record.get("histograms"))
            and record.get("run_id") != current["run_id"]
            and record.get("model_id") == current.get("model_id")
            and record.get("calibration_id") == current.get("calibration_id")
        ):
            found.append(record)
    return found[::-1]


def _well_formed(histograms: Any) -> bool:
    """Whether recorded histograms can be pooled (a damaged run file is left out, not fatal)."""
    try:
        binned = [histograms[name] for name in SIGNALS[1:] if name in histograms]
        return (
            histograms["rows"] > 0
            and all(isinstance(n, int) for n in histograms["labels"].values())
            and all(len(h["counts"]) == len(h["edges"]) - 1 for h in binned)
        )
    except (KeyError, TypeError, AttributeError):
        return False


def record_drift(
    out: Path, record: dict[str, Any], histograms: RunHistograms, runs: int, min_rows: int
) -> dict[str, Any]:
    """The keys a run adds to its record: ``histograms`` and ``drift`` (its comparison with the
    earlier runs), both absent when it wrote no readable row. Logs a warning on watch or alert."""
    counts = histograms.to_json()
    if counts is None:
        return {}
    current = {**record, "histograms": counts}
    drift = compare(current, reference_runs(out, current, runs), min_rows)
    if drift["flag"] in (WATCH, ALERT):
        log.warning(describe(drift), extra={"fields": {"event": "drift", **_log_fields(drift)}})
    return {"histograms": counts, "drift": drift}


def _log_fields(drift: dict[str, Any]) -> dict[str, Any]:
    fields = {"run_id": drift["run_id"], "flag": drift["flag"]}
    return fields | {f"{name}_psi": s["psi"] for name, s in drift["signals"].items()}


def latest_drift(out: Path) -> dict[str, Any] | None:
    """The newest comparison recorded on ``out``, with ``new``: whether it is the latest run's
    own (False after a run that classified nothing: the comparison shown then raises no new flag)."""
    newest = None
    for record in iter_runs(out, newest_first=True):
        newest = newest or record.get("run_id")
        drift = record.get("drift")
        if isinstance(drift, dict) and drift.keys() >= COMPARISON_KEYS:
            return {**drift, "new": drift["run_id"] == newest}
    return None


COMPARISON_KEYS = {"run_id", "reference_run_ids", "min_rows", "signals", "flag"}


def describe(drift: dict[str, Any]) -> str:
    """One readable line: ``drift alert: run R vs 3 earlier runs: labels PSI 2.7 (alert), ...``."""
    earlier = len(drift["reference_run_ids"])
    shown = ", ".join(_describe_signal(name, s) for name, s in drift["signals"].items())
    return f"drift {drift['flag']}: run {drift['run_id']} vs {earlier} earlier run(s): {shown}"


def _describe_signal(name: str, signal: dict[str, Any]) -> str:
    if signal["psi"] is None:
        return f"{name} not enough data ({signal['rows']} vs {signal['reference_rows']} rows)"
    return f"{name} PSI {signal['psi']:.3f} ({signal['flag']})"
