"""Prediction rows: one Arrow table per decoded batch, built column by column in NumPy/Arrow.

Failed files become ``status="error"`` rows with null predictions; nothing here loops over rows
in Python except to read each file's own facts (path, size, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from classify_job.classify.decode import DecodedBatch
from classify_job.decisions.attributes import attribute_columns
from classify_job.decisions.rule import AttributeDecided, Decided, DecisionRule
from classify_job.predictions import TIMESTAMP, prob_column
from classify_job.walk import display_path


@dataclass(frozen=True)
class RowContext:
    """Values shared by every row of one run."""

    labels: tuple[str, ...]
    model_id: str
    run_id: str
    top_k: int
    rule: DecisionRule


def predictions_table(
    batch: DecodedBatch, raw: np.ndarray, features: np.ndarray | None, ctx: RowContext, schema: pa.Schema
) -> pa.Table:
    """One row per file of ``batch``: ``raw`` probabilities and penultimate ``features`` have a row
    per file (rows of failed files are ignored); the decision is made here, once."""
    ok = batch.ok
    raw = np.where(ok[:, None], np.asarray(raw, np.float32), np.nan)
    decided = ctx.rule.decide(raw, features if ctx.rule.needs_features else None)
    columns = {
        **_file_columns(batch, ok),
        **prediction_columns(decided, raw, ok, ctx.labels, ctx.top_k),
        **decision_columns(decided, ok, ctx.rule),
        **_run_columns(ctx, len(ok)),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def _file_columns(batch: DecodedBatch, ok: np.ndarray) -> dict[str, pa.Array | list]:
    entries = batch.entries
    sizes = np.array([s or (0, 0) for s in batch.sizes], dtype=np.int32).reshape(-1, 2)
    return {
        "path": [display_path(e.path) for e in entries],
        "relpath": [e.relpath for e in entries],
        "relpath_bytes": [e.relpath_bytes for e in entries],
        "status": pa.DictionaryArray.from_arrays(
            pa.array(np.where(ok, 0, 1), pa.int8()), ["ok", "error"]
        ).cast(pa.string()),
        "error": batch.errors,
        "bytes": np.fromiter((e.size for e in entries), np.int64, len(entries)),
        "mtime": pa.array(
            np.fromiter((e.mtime_ns // 1000 for e in entries), np.int64, len(entries)), TIMESTAMP
        ),
        "width": pa.array(sizes[:, 0], pa.int32(), mask=~ok),
        "height": pa.array(sizes[:, 1], pa.int32(), mask=~ok),
    }


def prediction_columns(
    decided: Decided, raw: np.ndarray, ok: np.ndarray, labels: tuple[str, ...], top_k: int
) -> dict[str, pa.Array]:
    """Label, confidence, per-class and top-k columns (calibrated), and the raw values beside them."""
    probs = np.nan_to_num(decided.probs)
    k = min(top_k, len(labels))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top_probs = np.take_along_axis(probs, top, axis=1)
    names = pa.array(labels, pa.string())
    null = pa.array(~ok)
    raw = np.nan_to_num(raw)
    return {
        "label": pc.if_else(null, pa.scalar(None, pa.string()), names.take(pa.array(top[:, 0]))),
        "confidence": pa.array(top_probs[:, 0], pa.float32(), mask=~ok),
        **{prob_column(lab): pa.array(probs[:, i], pa.float32(), mask=~ok) for i, lab in enumerate(labels)},
        "top_labels": _lists(names.take(pa.array(top.ravel())), len(ok), k, null),
        "top_probs": _lists(pa.array(top_probs.ravel(), pa.float32()), len(ok), k, null),
        "raw_confidence": pa.array(raw.max(axis=1), pa.float32(), mask=~ok),
        "raw_probs": _lists(pa.array(raw.ravel(), pa.float32()), len(ok), len(labels), null),
    }


def decision_columns(decided: Decided, ok: np.ndarray, rule: DecisionRule) -> dict[str, pa.Array]:
    """The stored decision: unfamiliar score, accept/review, the reasons, the calibration used,
    and per attribute its value, confidence and decision."""
    score = decided.unfamiliar_score
    return {
        "unfamiliar_score": pa.array(np.nan_to_num(score), pa.float32(), mask=~ok | np.isnan(score)),
        "decision": pa.array(decided.decision.tolist(), pa.string()),
        "review_reason": pa.array([reason or None for reason in decided.reason], pa.string()),
        "calibration_id": pa.array([rule.calibration_id] * len(ok), pa.string(), mask=~ok),
        **{
            k: v for name, a in decided.attributes.items() for k, v in _attribute_columns(name, a, ok).items()
        },
    }


def _attribute_columns(name: str, decided: AttributeDecided, ok: np.ndarray) -> dict[str, pa.Array]:
    value, confidence, decision = attribute_columns(name)
    return {
        value: pa.array(decided.value.tolist(), pa.string()),
        confidence: pa.array(np.nan_to_num(decided.confidence), pa.float32(), mask=~ok),
        decision: pa.array(decided.decision.tolist(), pa.string()),
    }


def _lists(values: pa.Array, rows: int, width: int, null: pa.Array) -> pa.ListArray:
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values, mask=null)


def _run_columns(ctx: RowContext, n: int) -> dict[str, pa.Array]:
    return {
        "model_id": pa.repeat(pa.scalar(ctx.model_id), n) if n else pa.array([], pa.string()),
        "run_id": pa.repeat(pa.scalar(ctx.run_id), n) if n else pa.array([], pa.string()),
        "classified_at": pa.array(np.full(n, int(time.time() * 1e6)), TIMESTAMP),
    }
