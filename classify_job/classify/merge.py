"""Combine the outputs of shard runs into one dataset and one summary.

Part files are copied as they are (no re-encoding), after checks that make a silent mistake
impossible: one model, one input tree, every shard present once, every relpath once. The copies
are synced in a staging folder and swapped in by rename, then indexed; parts without rows are
left out. A merge that cannot write OUT (read-only, full) is an OutputError and leaves OUT as it was.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.classify.index import INDEX_DIR, OutputIndex, part_path_hashes
from classify_job.classify.lock import output_lock
from classify_job.errors import InputError, OutputError
from classify_job.predictions import (
    PREDICTIONS_DIR,
    check_part,
    commit_file,
    fsync_dir,
    list_parts,
    read_part_metadata,
    upgrade_part,
)
from classify_job.report.summary import write_summary


@dataclass(frozen=True)
class MergeResult:
    out: Path
    parts: int
    summary: dict[str, Any]
    shards: dict[str, list[str]]


def merge_outputs(sources: list[Path], out: Path, allow_missing_shards: bool = False) -> MergeResult:
    """Copy every part of ``sources`` into ``out/predictions`` and write one summary.

    Raises InputError when the sources disagree on model or input tree, when a shard is missing
    or given twice, or when a relpath appears in more than one source.
    """
    parts = {src: [p for p in _parts_of(src) if check_part(p).num_rows] for src in sources}
    footers = {src: read_part_metadata(p[-1]) for src, p in parts.items()}
    _check_same(footers, "model_id", "model")
    _check_same(footers, "input_dir", "input directory")
    shards = _check_shards(footers, allow_missing_shards)
    _check_disjoint(parts)
    with output_lock(_make_dir(out)):
        try:
            restore_interrupted_swap(out)
            _replace_predictions(out, [p for src in sources for p in parts[src]])
        except OSError as exc:
            raise OutputError(f"cannot write the merged predictions to {out}: {exc.strerror or exc}") from exc
        OutputIndex.load(out)  # index the merged parts now, so the next classify reads no rows
        summary = write_summary(out)
    return MergeResult(out, sum(map(len, parts.values())), summary, shards)


def _parts_of(source: Path) -> list[Path]:
    parts = list_parts(source)
    if not parts:
        raise InputError(f"no predictions to merge in {source}")
    return parts


def _check_same(footers: dict[Path, dict], key: str, what: str) -> None:
    values = {str(f.get(key)) for f in footers.values()}
    if len(values) > 1:
        detail = ", ".join(f"{src}: {f.get(key)}" for src, f in footers.items())
        raise InputError(f"cannot merge outputs of different {what}s ({detail})")


def _check_shards(footers: dict[Path, dict], allow_missing: bool) -> dict[str, list[str]]:
    by_shard: dict[str, list[str]] = defaultdict(list)
    for src, f in footers.items():
        by_shard[f.get("shard", "0/1")].append(str(src))
    counts = {int(s.split("/")[1]) for s in by_shard}
    if len(counts) > 1:
        raise InputError(f"sources were split into different shard counts: {sorted(by_shard)}")
    twice = {s: srcs for s, srcs in by_shard.items() if len(srcs) > 1}
    if twice:
        raise InputError(f"shard given more than once: {twice}")
    (n,) = counts
    missing = sorted(set(range(n)) - {int(s.split("/")[0]) for s in by_shard})
    if missing and not allow_missing:
        raise InputError(
            f"missing shard(s) {', '.join(f'{k}/{n}' for k in missing)}; add them or allow missing"
        )
    return dict(by_shard)


def _check_disjoint(parts: dict[Path, list[Path]]) -> None:
    owners = [np.concatenate([part_path_hashes(p) for p in ps]) for ps in parts.values()]
    source_of = np.concatenate([np.full(len(h), i) for i, h in enumerate(owners)])
    hashes = np.concatenate(owners)
    order = np.argsort(hashes, kind="stable")
    same = hashes[order][1:] == hashes[order][:-1]
    clash = same & (source_of[order][1:] != source_of[order][:-1])
    if clash.any():
        raise InputError(
            f"{int(clash.sum())} file(s) appear in more than one source; were shards overlapping?"
        )


def _make_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
    return out


def _old_predictions(out: Path) -> Path:
    return out / f".{PREDICTIONS_DIR}.old"


def restore_interrupted_swap(out: Path) -> bool:
    """Undo a merge killed between its two renames (call under the lock): with no predictions
    (or an empty folder made since) beside ``.predictions.old``, the old parts go back; beside a
    full predictions folder, the old copy is the leftover of a finished swap and is deleted.
    True when old parts were put back."""
    old, current = _old_predictions(out), out / PREDICTIONS_DIR
    if not old.is_dir():
        return False
    if current.is_dir() and any(current.iterdir()):
        shutil.rmtree(old, ignore_errors=True)
        return False
    if current.is_dir():
        current.rmdir()
    os.replace(old, current)
    fsync_dir(out)
    return True


def _replace_predictions(out: Path, parts: list[Path]) -> None:
    """Build the new predictions folder beside the old one, then swap them in two renames."""
    staging = out / f".{PREDICTIONS_DIR}.merging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for part in parts:
            copy = staging / f".{part.name}"  # staged under a hidden name until it is synced
            shutil.copy2(part, copy)
            commit_file(copy, staging / part.name)
            upgrade_part(staging / part.name)  # shards written by an earlier version get today's columns
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = _old_predictions(out)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(out / INDEX_DIR, ignore_errors=True)  # the old parts' index; rebuilt for the new
    if (out / PREDICTIONS_DIR).exists():
        os.replace(out / PREDICTIONS_DIR, old)
    os.replace(staging, out / PREDICTIONS_DIR)
    fsync_dir(out)
    shutil.rmtree(old, ignore_errors=True)
