"""``review export``: the rows of a classify run that need a person, out to a folder tree anyone can
fix in a file manager (``DIR/<predicted_label>/<entry>`` plus ``manifest.csv``) and to a Label
Studio task file, lowest confidence first, with a seeded audit sample of accepted rows.

The manifest is the contract ``review import`` reads back: one row per entry, naming the entry
(its path under DIR), the source file and Parquet row it came from, and the SHA-256 of its bytes.
"""

from __future__ import annotations

import csv
import heapq
import io
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from classify_job.atomic import atomic_path, write_text
from classify_job.decisions.rule import ACCEPT, DECISION_COLUMNS, REVIEW, stored_decisions
from classify_job.errors import InputError, OutputError
from classify_job.hashing import content_hash, content_hash_bytes, path_hash, split_position
from classify_job.loop import labelstudio
from classify_job.predictions import iter_batches, labels_of, read_part_metadata, require_predictions
from classify_job.walk import fs_path

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    *("entry", "source_path", "relpath", "predicted_label", "confidence", "decision"),
    *("review_reason", "model_id", "run_id", "sha256"),
)
REJECT = "_reject"  # the folder (and Label Studio choice) for items that are none of the classes
RESERVED = (REJECT, labelstudio.FOLDER)
_COLUMNS = ("path", "relpath", "relpath_bytes", "label", "model_id", "run_id", "top_labels", "top_probs")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Candidate:
    """A row picked for review or audit, and the path its file is read from."""

    source: str  # what open() takes (raw bytes kept for names that are not UTF-8)
    path: str  # the row's path column (text)
    relpath: str
    label: str
    confidence: float
    decision: str
    reason: str
    model_id: str
    run_id: str
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ExportResult:
    """What ``export_review`` wrote: counts per predicted label (review, audit), rows it could not
    export (relpath, reason), and how many rows of OUT need review in all."""

    folder: Path
    manifest: Path
    label_studio: Path
    review: int
    audit: int
    queue_total: int
    per_label: dict[str, tuple[int, int]]
    skipped: tuple[tuple[str, str], ...]


@dataclass
class _Selection:
    limit: int | None
    audit: int
    seed: int
    review: list[tuple[Any, ...]]
    sample: list[tuple[Any, ...]]
    labels: dict[str, None]
    queue_total: int = 0


def export_review(
    out: Path, dest: Path, limit: int | None = None, audit: int = 0, seed: int = 0, link: bool = False
) -> ExportResult:
    """Write the review queue of ``out`` (decision ``review``, lowest confidence first, at most
    ``limit``) and ``audit`` accepted rows drawn with ``seed`` to ``dest`` (copies, or symlinks
    with ``link``): entries, ``manifest.csv``, an empty ``_reject/``, Label Studio files."""
    _check_options(limit, audit)
    dest = Path(dest)
    selection = select_rows(out, limit, audit, seed)
    labels = list(selection.labels)
    _prepare(dest, labels)
    rows, tasks, skipped = [], [], []
    picked = [*selection.review, *selection.sample]  # each sorted by its key
    for candidate in (item[-1] for item in picked):
        entry = entry_name(candidate)
        try:
            digest = _place(candidate.source, dest / entry, link)
        except OSError as exc:
            skipped.append((candidate.relpath, exc.strerror or str(exc)))
            continue
        rows.append(_manifest_row(candidate, entry, digest))
        tasks.append(_task(candidate, entry, digest, dest))
    manifest = write_manifest(dest, rows)
    studio = labelstudio.write_project(dest, tasks, labels, REJECT)
    return _result(dest, manifest, studio, rows, selection.queue_total, skipped)


def _check_options(limit: int | None, audit: int) -> None:
    if limit is not None and limit < 0:
        raise InputError(f"--limit must be 0 or more. Received: {limit}")
    if audit < 0:
        raise InputError(f"--audit must be 0 or more. Received: {audit}")


def select_rows(out: Path, limit: int | None, audit: int, seed: int) -> _Selection:
    """One streaming pass over ``out``: the ``limit`` least confident review rows (all with None)
    and ``audit`` accepted rows, each drawn by a seeded hash of its relpath (so the draw does not
    depend on how rows are split into parts)."""
    selection = _Selection(limit, audit, seed, [], [], {})
    roots: dict[Path, str | None] = {}
    columns = (*_COLUMNS, *DECISION_COLUMNS)
    for part, batch in iter_batches(out, columns, probs=True, parts=require_predictions(out)):
        if part not in roots:
            roots[part] = read_part_metadata(part).get("input_dir")
            selection.labels.update(dict.fromkeys(labels_of(batch.schema)))
        _offer(selection, batch, roots[part])
    return selection


def _offer(selection: _Selection, batch: Any, root: str | None) -> None:
    decision, reason = stored_decisions(batch)
    relpaths = batch.column("relpath").to_pylist()
    confidence = batch.column("confidence").to_numpy(zero_copy_only=False)
    review = np.flatnonzero(decision == REVIEW)
    selection.queue_total += len(review)
    keyed = heapq.nsmallest(
        len(review) if selection.limit is None else selection.limit,
        (((float(confidence[i]), relpaths[i]), i) for i in review),
    )
    selection.review = _merge(selection.review, keyed, batch, REVIEW, reason, root, selection.limit)
    if selection.audit:
        purpose = f"audit:{selection.seed}"
        accepted = np.flatnonzero(decision == ACCEPT)
        keys = (((split_position(relpaths[i], purpose), relpaths[i]), i) for i in accepted)
        keyed = heapq.nsmallest(selection.audit, keys)
        selection.sample = _merge(selection.sample, keyed, batch, ACCEPT, reason, root, selection.audit)


def _merge(
    kept: list,
    keyed: list,
    batch: Any,
    decision: str,
    reason: np.ndarray,
    root: str | None,
    count: int | None,
) -> list[tuple[Any, ...]]:
    """``kept`` plus this batch's ``keyed`` rows, cut to the ``count`` smallest keys."""
    rows = batch.take([i for _, i in keyed]).to_pylist() if keyed else []
    found = [
        (*key, _candidate(row, decision, reason[i], root)) for (key, i), row in zip(keyed, rows, strict=True)
    ]
    return _smallest([*kept, *found], count)


def _smallest(items: list[tuple[Any, ...]], count: int | None) -> list[tuple[Any, ...]]:
    key = lambda item: item[:2]  # noqa: E731  (the Candidate itself is never compared)
    return sorted(items, key=key) if count is None else heapq.nsmallest(count, items, key=key)


def _candidate(row: dict[str, Any], decision: str, reason: str, root: str | None) -> Candidate:
    raw = row["relpath_bytes"]
    source = fs_path(root, row["relpath"], raw) if raw is not None and root else row["path"]
    top = tuple(zip(row["top_labels"] or (), row["top_probs"] or (), strict=False))
    return Candidate(
        source, row["path"], row["relpath"], row["label"], float(row["confidence"]), decision,
        reason or "", row["model_id"], row["run_id"], top,
    )  # fmt: skip


def entry_name(candidate: Candidate) -> str:
    """``<predicted_label>/<stem>-<16 hex>.<ext>``: the file's own name made safe for any file
    manager, and a hash of its relpath, so names are unique and the same on every export."""
    name = PurePosixPath(candidate.relpath).name
    stem, ext = os.path.splitext(name)
    stem = _UNSAFE.sub("_", stem).strip("._")[:60] or "image"
    ext = _UNSAFE.sub("_", ext[1:])
    suffix = f".{ext}" if ext else ""
    return f"{candidate.label}/{stem}-{path_hash(candidate.relpath):016x}{suffix}"


def _prepare(dest: Path, labels: list[str]) -> None:
    for label in labels:
        if label in RESERVED or "/" in label or label.startswith(".") or not label:
            raise InputError(f"a class name cannot be a review folder: {label!r} (reserved: {RESERVED})")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"review folder {dest} exists and is not empty; export to a new folder")
    try:
        for name in [*labels, REJECT]:
            (dest / name).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {dest}: {exc.strerror or exc}") from exc


def _place(source: str, entry: Path, link: bool) -> str:
    """Copy (atomically) or link ``source`` to ``entry``; the SHA-256 of its bytes. An OSError
    means the source could not be read; failing to write ``entry`` is an OutputError."""
    if link:
        digest = content_hash(source)
        try:
            os.symlink(os.path.abspath(source), entry)
        except OSError as exc:
            raise OutputError(f"cannot write {entry}: {exc.strerror or exc}") from exc
        return digest
    data = Path(source).read_bytes()
    with atomic_path(entry) as tmp:
        tmp.write_bytes(data)
    return content_hash_bytes(data)


def _manifest_row(candidate: Candidate, entry: str, digest: str) -> dict[str, Any]:
    values = (
        entry, candidate.path, candidate.relpath, candidate.label, round(candidate.confidence, 6),
        candidate.decision, candidate.reason, candidate.model_id, candidate.run_id, digest,
    )  # fmt: skip
    return dict(zip(MANIFEST_COLUMNS, values, strict=True))


def write_manifest(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``folder/manifest.csv`` (the MANIFEST_COLUMNS, one row per entry) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(folder / MANIFEST, buffer.getvalue())
    return folder / MANIFEST


def read_manifest(folder: Path) -> list[dict[str, str]]:
    """The rows of ``folder/manifest.csv``; an InputError when it is missing or not a manifest."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise InputError(f"review folder not found: {folder}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
    except FileNotFoundError:
        raise InputError(
            f"{folder} has no {MANIFEST}; it is not a folder written by `review export`"
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
        raise InputError(f"{path} is not a review manifest. Received columns: {reader.fieldnames}")
    return rows


def _task(candidate: Candidate, entry: str, digest: str, dest: Path) -> dict[str, Any]:
    top = ", ".join(f"{label} {prob:.2f}" for label, prob in candidate.top)
    why = candidate.reason or "audit sample of accepted labels"
    data = {
        "image": labelstudio.image_url(f"{dest.resolve().name}/{entry}"),
        "entry": entry,
        "sha256": digest,
        "source_path": candidate.path,
        "predicted_label": candidate.label,
        "confidence": round(candidate.confidence, 6),
        "decision": candidate.decision,
        "review_reason": candidate.reason,
        "hint": f"model says {candidate.label} ({candidate.confidence:.2f}): {why}; top {top}",
    }
    return labelstudio.task(data, candidate.label, candidate.confidence, candidate.model_id)


def _result(
    dest: Path, manifest: Path, studio: Path, rows: list[dict[str, Any]], total: int, skipped: list
) -> ExportResult:
    review = Counter(r["predicted_label"] for r in rows if r["decision"] == REVIEW)
    audit = Counter(r["predicted_label"] for r in rows if r["decision"] == ACCEPT)
    per_label = {label: (review[label], audit[label]) for label in sorted(review | audit)}
    return ExportResult(
        dest, manifest, studio, review.total(), audit.total(), total, per_label, tuple(skipped)
    )
