"""Tag a catalog (CSV or Parquet) with a run's predictions, joined on a key taken from each relpath.

Which image of a key needs review follows :mod:`classify_job.review`, plus two rules of its own:
a key whose readable images disagree, or that has no readable image, needs review too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from classify_job import atomic
from classify_job.config import coerce_paths
from classify_job.decisions.attributes import attribute_columns
from classify_job.decisions.rule import (
    ACCEPT,
    DECISION_COLUMNS,
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    check_review_settings,
    stored_decisions,
)
from classify_job.errors import InputError
from classify_job.predictions import attribute_column_names, attributes_of, iter_batches, require_predictions

CATALOG_FORMATS = (".csv", ".parquet")
REVIEW_CSV = "review.csv"
UNMATCHED_CATALOG_CSV = "unmatched_catalog.csv"
UNMATCHED_PREDICTIONS_CSV = "unmatched_predictions.csv"
SIDECAR_JSON = "tagging.json"
ADDED_COLUMNS = (
    "label",
    "confidence",
    "needs_review",
    "review_reason",
    "model_id",
    "image_relpath",
    "images",
)
_PREDICTION_COLUMNS = ("relpath", "error", "label", "model_id", *DECISION_COLUMNS)

DISAGREE = "images disagree"
UNREADABLE = "no readable image"
RULE = (
    "One image per key: needs_review is the image's decision, made at classify time (the bundle's "
    "calibrated per-class thresholds and unfamiliar cut-off; for rows classified before decisions "
    "were stored, confidence < threshold or top two probabilities < margin apart). Several images "
    "per key: the accepted image with the highest confidence gives label and confidence (the most "
    "confident readable one when none is accepted); the key needs review when no image is accepted, "
    "when the readable images disagree on the label, or when none is readable. Catalog rows without "
    "an image keep needs_review empty and are listed in unmatched_catalog.csv."
)


@dataclass(frozen=True)
class TagJob:
    """``classify-job tag``'s settings, from flags or a ``[tag]`` job-file table."""

    out: Path
    catalog: Path
    key_column: str
    key_from: str
    dest: Path | None = None
    threshold: float = DEFAULT_THRESHOLD
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        coerce_paths(self)

    @classmethod
    def resolve(cls, job_file: Path | None = None, **flags: Any) -> TagJob:
        from classify_job.config import resolve

        required = {
            "out": "OUT",
            "catalog": "--catalog",
            "key_column": "--key-column",
            "key_from": "--key-from",
        }
        return resolve(cls, job_file, "tag", required, **flags)


@dataclass(frozen=True)
class TagResult:
    """Where :func:`tag_catalog` wrote its files, and what it counted."""

    tagged: Path
    review: Path
    unmatched_catalog: Path
    unmatched_predictions: Path
    sidecar: Path
    counts: dict[str, int]


def tag_catalog(
    out: Path,
    catalog: Path,
    key_column: str,
    key_from: str,
    dest: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = DEFAULT_MARGIN,
) -> TagResult:
    """Add ``label``, ``confidence``, ``needs_review``, ``review_reason``, ``model_id``,
    ``image_relpath`` and ``images`` to every row of ``catalog`` from the predictions in ``out``.

    ``key_from`` is a regex searched in each relpath; its group named ``key``, else its first
    group, gives the key matched (as text) against ``key_column``. Every catalog row is kept, in
    order. Rules: one image per key gives its prediction and its stored decision; with several,
    the accepted image with the highest confidence gives label and confidence (the most confident
    readable one when none is accepted), and the key needs review when no image is accepted, the
    readable images disagree on the label, or none is readable. A catalog key with no image gets
    empty predictions and an empty ``needs_review``. Several catalog rows with one key all get its
    prediction. ``threshold`` and ``margin`` decide only rows stored without a decision.

    Writes into ``dest`` (default ``out``): ``<catalog stem>.tagged.<csv|parquet>`` in the
    catalog's format, ``review.csv`` (rows that need review, least confident first),
    ``unmatched_catalog.csv`` and ``unmatched_predictions.csv`` (each with a ``reason``), and
    ``tagging.json`` with the settings, the rule and the counts.
    """
    check_review_settings(threshold, margin)
    pattern = compile_key_pattern(key_from)
    table = read_catalog(catalog, key_column)
    predictions = read_predictions(out, pattern, threshold, margin)
    _check_attribute_columns(table, predictions, catalog)
    tables = _join(table, catalog_keys(table[key_column]), predictions)
    result = _result_paths(Path(out if dest is None else dest), Path(catalog), _counts(tables))
    _write_outputs(result, tables)
    settings = {"key_column": key_column, "key_from": key_from, "threshold": threshold, "margin": margin}
    _write_sidecar(result, out, catalog, settings, sorted(predictions.model_id.dropna().unique()))
    return result


@dataclass(frozen=True)
class _Tables:
    """Everything the join produces; ``matched`` has one row per catalog key that has images."""

    tagged: pd.DataFrame
    review: pd.DataFrame
    unmatched_catalog: pd.DataFrame
    unmatched_predictions: pd.DataFrame
    matched: pd.DataFrame
    predictions: int


def _join(table: pd.DataFrame, keys: pd.Series, predictions: pd.DataFrame) -> _Tables:
    per_key = best_per_key(predictions)
    tagged = pd.concat([table, tags_for(keys, per_key)], axis=1)
    needs_review = tagged.needs_review.fillna(False).astype(bool)
    return _Tables(
        tagged=tagged,
        review=tagged[needs_review].sort_values("confidence", na_position="first", kind="stable"),
        unmatched_catalog=_unmatched_catalog(table, keys, per_key),
        unmatched_predictions=_unmatched_predictions(predictions, set(keys.dropna())),
        matched=per_key[per_key.index.isin(keys.dropna())],
        predictions=len(predictions),
    )


def compile_key_pattern(key_from: str) -> re.Pattern[str]:
    """Compile ``key_from``; it must have a group named ``key`` or at least one group."""
    try:
        pattern = re.compile(key_from)
    except re.error as exc:
        raise InputError(
            f"--key-from is not a valid regular expression ({exc}). Received: {key_from!r}"
        ) from exc
    if pattern.groups == 0:
        raise InputError(f"--key-from needs a group, e.g. '(?P<key>[^/]+)/'. Received: {key_from!r}")
    return pattern


def read_catalog(catalog: Path, key_column: str) -> pd.DataFrame:
    """Read a .csv (every column as text, so values round-trip unchanged) or .parquet catalog."""
    catalog = Path(catalog)
    suffix = catalog.suffix.lower()
    if suffix not in CATALOG_FORMATS:
        raise InputError(f"--catalog must be a .csv or .parquet file. Received: {catalog}")
    if not catalog.is_file():
        raise InputError(f"catalog not found: {catalog}")
    try:
        if suffix == ".csv":
            table = pd.read_csv(catalog, dtype=str, keep_default_na=False)
        else:
            table = pd.read_parquet(catalog)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"cannot read catalog {catalog}: {exc}") from exc
    _check_catalog_columns(table, key_column, catalog)
    return table.reset_index(drop=True)


def _check_catalog_columns(table: pd.DataFrame, key_column: str, catalog: Path) -> None:
    if key_column not in table.columns:
        columns = ", ".join(map(str, table.columns))
        raise InputError(f"--key-column {key_column!r} is not a column of {catalog}. Columns: {columns}")
    clashes = sorted(set(ADDED_COLUMNS) & set(table.columns))
    if clashes:
        raise InputError(
            f"{catalog} already has column(s) {', '.join(clashes)} that tagging adds; rename them first"
        )


def _check_attribute_columns(table: pd.DataFrame, predictions: pd.DataFrame, catalog: Path) -> None:
    added = [c for name in attribute_names_in(predictions) for c in (tag_column(name), review_column(name))]
    clashes = sorted(set(added) & set(table.columns))
    if clashes:
        raise InputError(
            f"{catalog} already has column(s) {', '.join(clashes)} that tagging adds; rename them first"
        )


def attribute_names_in(predictions: pd.DataFrame) -> list[str]:
    """The attributes whose decisions the prediction rows carry."""
    return attributes_of(list(predictions.columns))


def tag_column(name: str) -> str:
    return attribute_columns(name)[0]


def review_column(name: str) -> str:
    return f"{tag_column(name)}_needs_review"


def catalog_keys(column: pd.Series) -> pd.Series:
    """Keys as text; empty values become missing."""
    if pd.api.types.is_float_dtype(column) and (column.dropna() % 1 == 0).all():
        column = column.astype("Int64")  # integer ids with gaps load as floats: match 123, not 123.0
    keys = column.astype("string").str.strip()
    return keys.mask(keys == "")


def read_predictions(
    out: Path, pattern: re.Pattern[str], threshold: float = DEFAULT_THRESHOLD, margin: float = DEFAULT_MARGIN
) -> pd.DataFrame:
    """Every prediction row with its decision and reason (stored, or the old rule at ``threshold``
    and ``margin`` for rows classified before decisions were stored) and its ``key`` (missing
    where the pattern fails)."""
    frames = []
    parts = require_predictions(out)
    for _, batch in iter_batches(out, _PREDICTION_COLUMNS, probs=True, parts=parts, attributes=True):
        frame = batch.select(list(_PREDICTION_COLUMNS) + attribute_column_names(batch.schema)).to_pandas()
        frame["decision"], frame["reason"] = stored_decisions(batch, threshold, margin)
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    groups = predictions.relpath.astype("string").str.extract(pattern, expand=True)
    predictions["key"] = catalog_keys(groups["key"] if "key" in pattern.groupindex else groups.iloc[:, 0])
    return predictions


def best_per_key(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per key: the image that gives the label, why the key needs review, the image count."""
    keyed = predictions[predictions.key.notna()].assign(
        ok=lambda df: df.status == "ok", accepted=lambda df: df.decision == ACCEPT
    )
    order = ["key", "accepted", "ok", "confidence", "relpath"]
    ordered = keyed.sort_values(order, ascending=[True, False, False, False, True])
    best = ordered.drop_duplicates("key").set_index("key")
    reasons = best.reason.fillna("").where(best.ok, UNREADABLE + ": " + best.error.fillna(""))
    disagreement = _disagreements(keyed[keyed.ok])
    reasons = _join_reasons(reasons, disagreement.reindex(best.index).fillna(""))
    return pd.DataFrame(
        {
            "label": best.label,
            "confidence": best.confidence.astype("float32"),
            "needs_review": reasons != "",
            "review_reason": reasons,
            "model_id": best.model_id,
            "image_relpath": best.relpath,
            "images": keyed.groupby("key").size().reindex(best.index).astype("int64"),
            **_attribute_tags(keyed, best.index),
        }
    )


def _attribute_tags(keyed: pd.DataFrame, keys: pd.Index) -> dict[str, pd.Series]:
    """Per attribute: the value of the accepted image with the highest attribute confidence (else
    of the most confident readable one), and whether the key needs review for that attribute."""
    tags = {}
    for name in attribute_names_in(keyed):
        value, confidence, decision = attribute_columns(name)
        rows = keyed.assign(attr_accepted=keyed[decision] == ACCEPT)
        order = ["key", "attr_accepted", "ok", confidence, "relpath"]
        ordered = rows.sort_values(order, ascending=[True, False, False, False, True])
        best = ordered.drop_duplicates("key").set_index("key").reindex(keys)
        values = rows[rows.ok].groupby("key")[value].nunique().reindex(keys).fillna(0)
        tags[tag_column(name)] = best[value]
        tags[review_column(name)] = ~best.attr_accepted.astype(bool) | (values > 1)
    return tags


def _disagreements(ok: pd.DataFrame) -> pd.Series:
    """For keys whose readable images have more than one label: 'images disagree: blue 1, red 2'."""
    counts = ok.groupby(["key", "label"]).size().reset_index(name="n")
    counts = counts[counts.groupby("key").key.transform("size") > 1]
    text = counts.label + " " + counts.n.astype(str)
    return DISAGREE + ": " + text.groupby(counts.key).agg(", ".join)


def _join_reasons(first: pd.Series, second: pd.Series) -> pd.Series:
    joined = first + "; " + second
    return joined.where((first != "") & (second != ""), first + second)


def tags_for(keys: pd.Series, per_key: pd.DataFrame) -> pd.DataFrame:
    """The added columns for each catalog row, aligned with ``keys``; rows without an image stay empty."""
    tags = per_key.reindex(keys.to_numpy()).set_axis(keys.index)
    tags["needs_review"] = tags.needs_review.astype("boolean")
    tags["images"] = tags.images.fillna(0).astype("int64")
    tags["review_reason"] = tags.review_reason.fillna("")
    for column in tags.columns[tags.columns.str.endswith("_needs_review")]:
        tags[column] = tags[column].astype("boolean")
    return tags


def _unmatched_catalog(table: pd.DataFrame, keys: pd.Series, per_key: pd.DataFrame) -> pd.DataFrame:
    missing = keys.isna() | ~keys.isin(per_key.index)
    reasons = np.where(keys.isna(), "empty key", "no image with this key")
    return table[missing].assign(reason=reasons[missing.to_numpy()])


def _unmatched_predictions(predictions: pd.DataFrame, catalog_keys: set[str]) -> pd.DataFrame:
    no_key = predictions.key.isna()
    unmatched = no_key | ~predictions.key.isin(catalog_keys)
    reasons = np.where(no_key, "key pattern did not match the relpath", "no catalog row with this key")
    columns = ["relpath", "key", "status", "error", "label", "confidence"]
    return predictions.loc[unmatched, columns].assign(reason=reasons[unmatched.to_numpy()])


def _counts(tables: _Tables) -> dict[str, int]:
    matched = tables.matched
    return {
        "catalog_rows": len(tables.tagged),
        "matched_rows": int((tables.tagged.images > 0).sum()),
        "labelled_rows": int(tables.tagged.label.notna().sum()),
        "needs_review": len(tables.review),
        "unmatched_catalog": len(tables.unmatched_catalog),
        "predictions": tables.predictions,
        "unmatched_predictions": len(tables.unmatched_predictions),
        "keys_with_several_images": int((matched.images > 1).sum()),
        "keys_with_disagreeing_images": int(matched.review_reason.str.contains(DISAGREE, regex=False).sum()),
    }


def _result_paths(dest: Path, catalog: Path, counts: dict[str, int]) -> TagResult:
    return TagResult(
        tagged=dest / f"{catalog.stem}.tagged{catalog.suffix.lower()}",
        review=dest / REVIEW_CSV,
        unmatched_catalog=dest / UNMATCHED_CATALOG_CSV,
        unmatched_predictions=dest / UNMATCHED_PREDICTIONS_CSV,
        sidecar=dest / SIDECAR_JSON,
        counts=counts,
    )


def _write_outputs(result: TagResult, tables: _Tables) -> None:
    with atomic.atomic_path(result.tagged) as tmp:
        if result.tagged.suffix == ".csv":
            _to_csv(tables.tagged, tmp)
        else:
            tables.tagged.to_parquet(tmp, index=False, compression="zstd")
    for name in ("review", "unmatched_catalog", "unmatched_predictions"):
        with atomic.atomic_path(getattr(result, name)) as tmp:
            _to_csv(getattr(tables, name), tmp)


def _to_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.4f")


def _write_sidecar(
    result: TagResult, out: Path, catalog: Path, settings: dict[str, Any], model_ids: list[str]
) -> None:
    files = {
        name: getattr(result, name).name
        for name in ("tagged", "review", "unmatched_catalog", "unmatched_predictions")
    }
    sidecar = {
        "out": str(Path(out).absolute()),
        "catalog": str(Path(catalog).absolute()),
        **settings,
        "rule": RULE,
        "model_ids": model_ids,
        "counts": result.counts,
        "files": files,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic.write_json(result.sidecar, sidecar)
