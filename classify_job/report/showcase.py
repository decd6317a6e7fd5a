"""The rows a report shows, picked in one streaming pass: per label a histogram and the extremes.

Per label the most and least confident images, plus the review queue, each in a bounded list.
Only a few columns of each batch are held at a time and only the kept rows become :class:`ReportRow`
objects, so a run of millions of images costs little memory; ties are broken by relpath, so what
is kept never depends on batch or part boundaries.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from classify_job.decisions.rule import DECISION_COLUMNS, stored_decisions, top_two_margin
from classify_job.predictions import iter_batches, prob_matrix

BINS = 20
_COLUMNS = ("path", "relpath", "label", *DECISION_COLUMNS)
_SHOWN_PROBS = 3


@dataclass(frozen=True)
class ReportRow:
    """One kept row: what a thumbnail caption and the review table show."""

    relpath: str
    path: str
    label: str
    confidence: float
    margin: float
    reason: str
    top: tuple[tuple[str, float], ...]


class BoundedList:
    """The ``size`` samples with the smallest ``key`` offered so far, smallest first."""

    def __init__(self, size: int, key: Callable[[ReportRow], Any]) -> None:
        self.size, self.key, self.items = size, key, []

    def offer(self, samples: Iterable[ReportRow]) -> None:
        self.items = heapq.nsmallest(self.size, [*self.items, *samples], key=self.key)


def _most_confident(s: ReportRow) -> tuple[float, str]:
    return -s.confidence, s.relpath


def _least_confident(s: ReportRow) -> tuple[float, str]:
    return s.confidence, s.relpath


@dataclass
class Showcase:
    """What one pass over the predictions keeps: per label a histogram and the extremes, plus the
    review queue and how many rows it holds in all."""

    threshold: float
    margin: float
    per_label: int
    review: BoundedList
    hist: dict[str, np.ndarray] = field(default_factory=dict)
    top: dict[str, BoundedList] = field(default_factory=dict)
    bottom: dict[str, BoundedList] = field(default_factory=dict)
    review_total: int = 0

    def add_label(self, label: str, rows: _Rows, index: np.ndarray) -> None:
        if label not in self.hist:
            self.hist[label] = np.zeros(BINS, dtype=np.int64)
            self.top[label] = BoundedList(self.per_label, _most_confident)
            self.bottom[label] = BoundedList(self.per_label, _least_confident)
        conf = rows.confidence[index]
        self.hist[label] += np.histogram(conf, bins=BINS, range=(0.0, 1.0))[0]
        self.top[label].offer(rows.samples(rows.smallest(-conf, index, self.per_label)))
        self.bottom[label].offer(rows.samples(rows.smallest(conf, index, self.per_label)))

    def add_review(self, rows: _Rows, index: np.ndarray) -> None:
        self.review_total += len(index)
        self.review.offer(rows.samples(rows.smallest(rows.confidence[index], index, self.review.size)))

    def paths(self) -> list[str]:
        kept = [*self.review.items]
        for label in self.hist:
            kept += self.top[label].items + self.bottom[label].items
        return sorted({s.path for s in kept})


@dataclass(frozen=True)
class _Rows:
    """One record batch as arrays; ``samples`` materialises only the rows asked for."""

    batch: pa.RecordBatch
    ok: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray
    reason: np.ndarray
    prob_labels: list[str]
    probs: np.ndarray

    def smallest(self, values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
        """The rows of ``index`` with the ``n`` smallest ``values``, ties broken by relpath as
        :class:`BoundedList` breaks them, so what is kept never depends on batch boundaries."""
        if len(index) <= n:
            return index
        kth = np.partition(values, n - 1)[n - 1]
        below, ties = index[values < kth], index[values == kth]
        by_name = pc.sort_indices(self.batch.column("relpath").take(pa.array(ties))).to_numpy()
        return np.concatenate([below, ties[by_name[: n - len(below)]]])

    def samples(self, index: np.ndarray) -> list[ReportRow]:
        taken = self.batch.select(["relpath", "path", "label"]).take(pa.array(index, pa.int64())).to_pylist()
        return [self._sample(row, int(i)) for row, i in zip(taken, index, strict=True)]

    def _sample(self, row: dict[str, Any], i: int) -> ReportRow:
        order = np.argsort(-self.probs[i], kind="stable")[:_SHOWN_PROBS]
        top = tuple((self.prob_labels[j], float(self.probs[i, j])) for j in order)
        conf, margin = float(self.confidence[i]), float(self.margin[i])
        return ReportRow(row["relpath"], row["path"], row["label"], conf, margin, str(self.reason[i]), top)


def collect_showcase(
    out: Path, threshold: float, margin: float, per_label: int, review_limit: int
) -> Showcase:
    """Stream the predictions once and keep histograms, extremes per label and the review queue."""
    review = BoundedList(review_limit, _least_confident)
    samples = Showcase(threshold=threshold, margin=margin, per_label=per_label, review=review)
    for _, batch in iter_batches(out, _COLUMNS, probs=True):
        rows = _batch_rows(batch, threshold, margin)
        labels = pc.dictionary_encode(batch.column("label"))
        codes = labels.indices.to_numpy(zero_copy_only=False)
        for code, label in enumerate(labels.dictionary.to_pylist()):
            samples.add_label(label, rows, np.flatnonzero(rows.ok & (codes == code)))
        samples.add_review(rows, np.flatnonzero(rows.ok & (rows.reason != "")))
    return samples


def _batch_rows(batch: pa.RecordBatch, threshold: float, margin: float) -> _Rows:
    confidence = batch.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64)
    prob_labels, probs = prob_matrix(batch)
    margins = top_two_margin(probs).astype(np.float64)
    _, reason = stored_decisions(batch, threshold, margin)
    ok = pc.equal(batch.column("status"), "ok").to_numpy(zero_copy_only=False) & ~np.isnan(confidence)
    return _Rows(batch, ok, confidence, margins, np.where(ok, reason, "").astype(str), prob_labels, probs)
