"""Every hash the project uses, one function per purpose.

The algorithms are part of the on-disk contract: shard assignment, resume keys and model ids are
stored in output directories and bundles, and train/val/test splits decide which images a model
was tested on. Changing one means a new name here and a version where it is recorded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

SPLIT_HASH = "sha256-relpath-v1"  # recorded in bundle.json next to the split fractions
_CHUNK = 1 << 20


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def path_hash(relpath: str) -> int:
    """A 64-bit identity of a relative path, the same on every machine and Python run."""
    return _blake64(relpath)


def path_hashes(relpaths: Iterable[str]) -> np.ndarray:
    """:func:`path_hash` of each relpath, as a uint64 array."""
    return np.fromiter((_blake64(r) for r in relpaths), dtype=np.uint64)


def shard_of(relpath: str, count: int) -> int:
    """Which of ``count`` shards a file belongs to (0-based); fixed by its relative path alone."""
    return path_hash(relpath) % count


def model_hash(model_id: str) -> int:
    """A 64-bit identity of a model id, for :func:`resume_keys`."""
    return _blake64(model_id)


def resume_keys(
    path_hash: np.ndarray, size: np.ndarray, mtime_us: np.ndarray, model: np.ndarray
) -> np.ndarray:
    """64-bit keys of "this file, in this state, classified by this model", for whole arrays.

    Mixes :func:`path_hash`, byte size, mtime (microseconds) and :func:`model_hash` with the
    SplitMix64 finaliser, in NumPy: no Python work per file. Keys are never stored in the
    Parquet output, only in its rebuildable index, so this mix may change with that index's version.
    """
    mixed = _splitmix(np.asarray(mtime_us).astype(np.uint64) ^ np.asarray(model, dtype=np.uint64))
    mixed = _splitmix(np.asarray(size).astype(np.uint64) ^ mixed)
    return _splitmix(np.asarray(path_hash, dtype=np.uint64) ^ mixed)


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_position(relpath: str, purpose: str = "") -> float:
    """A number in [0, 1) fixed by a file's relative path: where it falls among the splits.

    ``purpose`` gives an independent position for another division of the same files (the
    recalibration thirds), so it does not repeat the train/val/test cut."""
    digest = hashlib.sha256((purpose + relpath).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def weights_id(weights: Iterable[Any]) -> str:
    """A short hash of every weight's path, shape, dtype and bytes: changes exactly when they do.

    ``weights`` are Keras variables (anything with ``.path`` and ``.numpy()``).
    """
    digest = hashlib.sha256()
    for weight in weights:
        value = weight.numpy()
        digest.update(str((weight.path, value.shape, str(value.dtype))).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def content_hash(path: str | os.PathLike, follow_symlinks: bool = True) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks. With ``follow_symlinks=False`` a symbolic
    link as the last component is refused (OSError, O_NOFOLLOW where the platform has it)."""
    digest = hashlib.sha256()
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    with open(os.open(path, flags), "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash_bytes(data: bytes) -> str:
    """SHA-256 (hex) of bytes already in memory; equal to :func:`content_hash` of a file holding them."""
    return hashlib.sha256(data).hexdigest()


def dataset_fingerprint(files: Iterable[tuple[str, int]]) -> str:
    """Short SHA-256 of sorted ``relpath<TAB>size`` lines: changes when a file is added, removed, resized."""
    digest = hashlib.sha256()
    for line in sorted(f"{relpath}\t{size}" for relpath, size in files):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def content_prefixes(digests: Iterable[str]) -> np.ndarray:
    """Sorted, distinct uint64 prefixes (the first 8 bytes) of SHA-256 hex digests: 8 bytes a file
    and, for a holdout of thousands against millions of training images, no false matches to speak of."""
    return np.unique(np.fromiter((int(d[:16], 16) for d in digests), dtype=np.uint64))
