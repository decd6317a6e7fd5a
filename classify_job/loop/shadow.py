"""Shadow comparison: which labels of an earlier classify run would flip if the candidate replaced
the current model, per class pair, on a seeded sample of the run's rows."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify_job.bundle import Bundle
from classify_job.loop.gate import score_files
from classify_job.predictions import iter_batches, read_part_metadata, require_predictions
from classify_job.train.dataset import LabelledFile
from classify_job.walk import fs_path

COLUMNS = ("status", "path", "relpath", "relpath_bytes", "label")


@dataclass(frozen=True)
class ShadowFlips:
    """Labels that change on ``compared`` sampled rows of ``out`` (``flips``: from, to, count, most
    first); ``baseline`` says what the candidate is compared with."""

    out: Path
    sampled: int
    compared: int
    unreadable: int
    baseline: str
    flips: tuple[tuple[str, str, int], ...]

    @property
    def flipped(self) -> int:
        return sum(count for _, _, count in self.flips)

    @property
    def share(self) -> float:
        return self.flipped / self.compared if self.compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "sampled": self.sampled,
            "compared": self.compared,
            "unreadable": self.unreadable,
            "baseline": self.baseline,
            "flipped": self.flipped,
            "share": round(self.share, 5),
            "flips": [{"from": a, "to": b, "count": n} for a, b, n in self.flips],
        }


def shadow_flips(
    out: Path, candidate: Bundle, current: Bundle | None, limit: int = 2000, seed: int = 0
) -> ShadowFlips:
    """Predict a sample of at most ``limit`` ok rows of ``out`` with the candidate and the current
    model (with no current model, compare with the labels the rows hold) and count the changes."""
    samples, stored = sample_rows(out, limit, seed)
    root = Path("/")  # sample relpaths are absolute paths
    new = score_files(candidate, root, samples)
    if current is not None:
        old = score_files(current, root, samples)
        before = dict(zip(old.relpaths, old.predicted_labels(), strict=True))
        baseline = f"the current model {current.spec.model_id}"
    else:
        before = dict(zip((s.relpath for s in samples), stored, strict=True))
        baseline = "the labels stored in the run (the registry has no current model)"
    after = dict(zip(new.relpaths, new.predicted_labels(), strict=True))
    both = [path for path in after if path in before]
    flips = Counter((before[p], after[p]) for p in both if before[p] != after[p])
    ordered = sorted(flips.items(), key=lambda item: (-item[1], item[0]))
    return ShadowFlips(
        out=out,
        sampled=len(samples),
        compared=len(both),
        unreadable=len(samples) - len(both),
        baseline=baseline,
        flips=tuple((a, b, n) for (a, b), n in ordered),
    )


def sample_rows(out: Path, limit: int, seed: int) -> tuple[list[LabelledFile], list[str]]:
    """A seeded uniform sample of at most ``limit`` ok rows (the smallest of one random key per row,
    kept as the parts stream by, so memory stays at ``limit`` rows), as files to open and their
    stored labels."""
    parts = require_predictions(out)
    rng = np.random.default_rng(seed)
    keys, files, labels = np.empty(0), np.empty(0, dtype=object), np.empty(0, dtype=object)
    input_dirs = {part: read_part_metadata(part).get("input_dir", "/") for part in parts}
    for part, batch in iter_batches(out, COLUMNS, parts=parts):
        ok = np.array([status == "ok" for status in batch.column("status").to_pylist()], dtype=bool)
        rows = batch.to_pydict()
        opened = [
            _file(path, relpath, raw, input_dirs[part])
            for path, relpath, raw in zip(rows["path"], rows["relpath"], rows["relpath_bytes"], strict=True)
        ]
        keys = np.concatenate([keys, rng.random(batch.num_rows)[ok]])
        files = np.concatenate([files, np.array(opened, dtype=object)[ok]])
        labels = np.concatenate([labels, np.array(rows["label"], dtype=object)[ok]])
        if len(keys) > limit:
            keep = np.argpartition(keys, limit)[:limit]
            keys, files, labels = keys[keep], files[keep], labels[keep]
    order = np.argsort(keys, kind="stable")
    return [files[i] for i in order], [labels[i] for i in order]


def _file(path: str, relpath: str, raw: bytes | None, input_dir: str) -> LabelledFile:
    """A row's file: its ``path``, or, for a name that is not UTF-8, the raw bytes under its tree."""
    if raw is None:
        return LabelledFile(path, 0, 0)
    return LabelledFile(path, 0, 0, os.fsencode(fs_path(input_dir, relpath, raw)))
