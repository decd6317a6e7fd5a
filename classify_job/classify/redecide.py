"""A bundle with a new calibration re-decides the rows its model already wrote, without running
the model: calibrated probabilities, thresholds and the unfamiliar cut-off only need each row's
stored raw probabilities and unfamiliar score. Rows from before decisions were stored have no
score; where the new rule has an unfamiliar cut-off they go to review, since nothing says they
are familiar."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from classify_job.classify.index import PartIndex, write_index
from classify_job.classify.rows import decision_columns, prediction_columns
from classify_job.decisions.rule import DecisionRule
from classify_job.predictions import (
    attribute_column_names,
    labels_of,
    prob_column,
    read_part_metadata,
    with_footer,
    write_part,
)

log = logging.getLogger(__name__)


def redecide(
    parts: list[PartIndex], rule: DecisionRule, model_id: str, top_k: int
) -> tuple[list[PartIndex], int]:
    """Rewrite the parts holding rows of ``model_id`` decided under another calibration; returns
    the new part indexes and the number of rows re-decided.

    Which model and calibration wrote a part comes from the footer the index load already read
    (:attr:`PartIndex.footer`), so a rerun under the same calibration reads no Parquet here; only
    an index without it (built by a caller that did not read the footer) costs a footer read."""
    if rule.calibration_id is None:
        return parts, 0
    changed, total = [], 0
    for part in parts:
        footer = part.footer if part.footer is not None else read_part_metadata(part.part)
        if footer.get("model_id") != model_id or footer.get("calibration_id") == rule.calibration_id:
            changed.append(part)
            continue
        footer = {**footer, "calibration_id": rule.calibration_id}
        rows = _redecide_part(part.part, rule, model_id, top_k, footer)
        changed.append(write_index(part.part, part.rows, footer) if rows else part)
        total += rows
    if total:
        log.info("re-decided %d row(s) under calibration %s", total, rule.calibration_id)
    return changed, total


def _redecide_part(path: Path, rule: DecisionRule, model_id: str, top_k: int, footer: dict) -> int:
    table = pq.read_table(path)
    mine = _equal(table, "model_id", model_id)
    if not mine.any() or labels_of(table.schema) != list(rule.labels):
        return 0
    ok = mine & _equal(table, "status", "ok")
    raw = _raw_probs(table, rule.labels)
    score = table.column("unfamiliar_score").to_numpy().astype(np.float32)  # nulls become NaN
    decided = rule.decide(np.where(ok[:, None], raw, np.nan), score=score)
    columns = {
        **prediction_columns(decided, raw, ok, rule.labels, top_k),
        **decision_columns(decided, ok, rule),
    }
    for name in attribute_column_names(table.schema):  # attributes the new rule no longer decides
        columns.setdefault(name, pa.nulls(len(table), table.schema.field(name).type))
    for name, values in columns.items():  # the label too: temperature scaling never moves it
        if name not in table.schema.names:  # an attribute the part's rows were not decided on
            table = table.append_column(name, pa.nulls(len(table), values.type))
        merged = pc.if_else(pa.array(mine), values, table.column(name).combine_chunks())
        table = table.set_column(table.schema.get_field_index(name), name, merged)
    table = table.replace_schema_metadata(with_footer(table.schema, footer).metadata)
    write_part(path, table)  # under OUT/.tmp, synced, renamed in: predictions/ holds whole parts only
    return int(mine.sum())


def _raw_probs(table: pa.Table, labels: tuple[str, ...]) -> np.ndarray:
    """Each row's raw probabilities: ``raw_probs``, or the ``prob_<label>`` columns of rows
    written before calibration existed (they were raw then)."""
    raw = np.column_stack([table.column(prob_column(label)).to_numpy() for label in labels])
    raw = raw.astype(np.float32)
    stored = table.column("raw_probs").combine_chunks()
    have = ~stored.is_null().to_numpy(zero_copy_only=False)
    if have.any():
        raw[have] = stored.filter(pa.array(have)).flatten().to_numpy().reshape(-1, len(labels))
    return raw


def _equal(table: pa.Table, column: str, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(table.column(column), value), False).to_numpy()
