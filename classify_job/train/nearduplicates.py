"""Near-duplicate images: a tiny colour signature per image, and groups of images whose signatures are close.

Exact copies are found by content hash (``checkdata.find_duplicates``); this finds the same picture
saved again: re-encoded, resized, or with its contrast changed. An image's signature is its 16x16
RGB box average. Compared with each channel's mean taken off and scaled to unit length, so a colour
cast or a contrast change does not count, two pictures are near duplicates when their signatures
lie within :data:`NEAR_DUPLICATE_DISTANCE` (Euclidean; 0 is the same picture, 2 the most different).
A flat image has no signature to speak of: two noisy flat images are not near duplicates, two
truly blank ones are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from PIL import Image

from classify_job.imageio import flatten

SIGNATURE_SIDE = 16
SIGNATURE_BYTES = SIGNATURE_SIDE * SIGNATURE_SIDE * 3
# Measured on 600 of the sample generator's photos: distinct photos are >= 0.21 apart, while JPEG
# re-encodes at quality 85, resizes (half, double, 48 px) and a 0.8 contrast change stay within
# 0.08. On the 10,000 Fashion-MNIST test images, 4 pairs of distinct items fall within it.
NEAR_DUPLICATE_DISTANCE = 0.09
# A nearly flat image is not stretched to unit length (that would magnify its JPEG noise into a
# pattern); blank images stay near zero, so close to each other, and are flagged together.
_MIN_CONTRAST = 2.0
_AXES = 32  # the search's lower bound: 32 principal axes and the rest's length (13x fewer candidates than 16)
_AXIS_SAMPLE = 10_000
_CHUNK = 8192
_ROW_BLOCK = 1024


@dataclass(frozen=True)
class NearDuplicateGroup:
    """Files (one per distinct content) that look alike; ``links`` are the measured pairs that join
    them, as (index, index, distance) into ``relpaths``."""

    relpaths: tuple[str, ...]
    labels: tuple[str, ...]
    links: tuple[tuple[int, int, float], ...]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1

    @property
    def max_distance(self) -> float:
        return max(distance for _, _, distance in self.links)


def image_signature(img: Image.Image) -> bytes:
    """The 16x16 RGB box average of a decoded image (768 bytes): what near-duplicate search compares."""
    side = (SIGNATURE_SIDE, SIGNATURE_SIDE)
    return flatten(img).resize(side, Image.Resampling.BOX).convert("RGB").tobytes()


def group_near_duplicates(
    relpaths: Sequence[str],
    labels: Sequence[str],
    signatures: Sequence[bytes],
    max_distance: float = NEAR_DUPLICATE_DISTANCE,
) -> tuple[NearDuplicateGroup, ...]:
    """Groups of files whose signatures are linked by pairs within ``max_distance``, conflicting
    labels first. Give one file per distinct content: identical bytes are exact duplicates."""
    first: dict[bytes, int] = {}
    identical = []  # linked at distance 0 and searched once: many blank images stay cheap
    for k, signature in enumerate(signatures):
        if signature in first:
            identical.append((first[signature], k, 0.0))
        else:
            first[signature] = k
    unique = list(first.values())
    matrix = np.frombuffer(b"".join(signatures[k] for k in unique), np.uint8).reshape(
        len(unique), SIGNATURE_BYTES
    )
    found = ((unique[i], unique[j], d) for i, j, d in near_pairs(matrix, max_distance))
    groups = []
    for links in link_groups(len(signatures), chain(identical, found)):
        members = sorted({k for i, j, _ in links for k in (i, j)}, key=lambda k: relpaths[k])
        position = {k: n for n, k in enumerate(members)}
        groups.append(
            NearDuplicateGroup(
                tuple(relpaths[k] for k in members),
                tuple(labels[k] for k in members),
                tuple(sorted((position[i], position[j], round(d, 4)) for i, j, d in links)),
            )
        )
    return tuple(sorted(groups, key=lambda g: (not g.conflicting, g.relpaths)))


def signature_vectors(signatures: np.ndarray) -> np.ndarray:
    """uint8 signature rows as float32: each channel zero-mean, unit length (shorter when nearly flat)."""
    pixels = signatures.reshape(len(signatures), signatures.shape[1] // 3, 3)
    x = (pixels - pixels.mean(axis=1, keepdims=True, dtype=np.float32)).reshape(signatures.shape)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _MIN_CONTRAST * np.sqrt(x.shape[1]))


def near_pairs(signatures: np.ndarray, max_distance: float) -> Iterator[tuple[int, int, float]]:
    """Every pair (i < j) of uint8 signature rows within ``max_distance``, without comparing every
    pair in full.

    Each row is reduced to its coordinates on the main axes of variation plus the length of what is
    left over; distances between those short rows are lower bounds of the full distances. On the
    first two axes the rows are put on a grid of ``max_distance`` cells, so a row meets only the
    rows of nearby cells, and only pairs whose bound passes are measured in full. Memory stays at
    the uint8 rows plus 17 floats a row.
    """
    if len(signatures) < 2:
        return
    short = _lower_bound_rows(signatures)
    slabs = np.floor(short[:, 0] / max_distance).astype(np.int64)
    order = np.lexsort((short[:, 1], slabs))
    short, slabs = short[order], slabs[order]
    for rows, cols in _close_in(short, slabs, max_distance):
        if not len(rows):
            continue
        a, b = order[rows], order[cols]
        distances = np.linalg.norm(
            signature_vectors(signatures[a]) - signature_vectors(signatures[b]), axis=1
        )
        for i, j, distance in zip(np.minimum(a, b), np.maximum(a, b), distances, strict=True):
            if distance <= max_distance:
                yield int(i), int(j), float(distance)


def link_groups(n: int, pairs: Iterable[tuple[int, int, float]]) -> list[list[tuple[int, int, float]]]:
    """Connected groups of ``n`` items joined by ``pairs``; each group as the pairs that first joined
    it (a spanning tree, so a group of k items has k - 1 links)."""
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    links = []
    for i, j, distance in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[ri] = rj
            links.append((i, j, distance))
    groups: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
    for link in links:
        groups[root(link[0])].append(link)
    return list(groups.values())


def _lower_bound_rows(signatures: np.ndarray) -> np.ndarray:
    """Each row's coordinates on the top principal axes (from an evenly spaced sample of rows) and
    the length of its remainder: for two rows, the distance between these is at most their own."""
    sample = signature_vectors(signatures[:: max(1, len(signatures) // _AXIS_SAMPLE)]).astype(np.float64)
    centred = sample - sample.mean(axis=0)
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    axes = eigenvectors[:, ::-1][:, :_AXES].astype(np.float32)
    short = np.empty((len(signatures), axes.shape[1] + 1), np.float32)
    for start in range(0, len(signatures), _CHUNK):
        x = signature_vectors(signatures[start : start + _CHUNK])
        coordinates = x @ axes
        short[start : start + len(x), :-1] = coordinates
        short[start : start + len(x), -1] = np.linalg.norm(x - coordinates @ axes.T, axis=1)
    return short


def _close_in(
    z: np.ndarray, slabs: np.ndarray, max_distance: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (row < col) of ``z`` within ``max_distance`` (plus float32 rounding); ``z`` is
    sorted by ``slabs`` (its first column in steps of ``max_distance``), then by its second column.
    A close pair lies in one slab or two neighbouring ones, within ``max_distance`` on column 2."""
    squared = np.einsum("ij,ij->i", z, z)
    limit = max_distance**2 + 1e-4  # float32 rounding of the expansion below; the full check is exact
    starts = np.flatnonzero(np.diff(slabs, prepend=slabs[0] - 1)).tolist()
    bounds = dict(zip(slabs[starts].tolist(), zip(starts, [*starts[1:], len(z)], strict=True), strict=True))
    for slab, (begin, end) in bounds.items():
        after = bounds.get(slab + 1)
        for start in range(begin, end, _ROW_BLOCK):
            stop = min(start + _ROW_BLOCK, end)
            low, high = z[start, 1] - max_distance, z[stop - 1, 1] + max_distance
            spans = [(start, _position(z, begin, end, high, "right"))]
            if after is not None:
                spans.append((_position(z, *after, low, "left"), _position(z, *after, high, "right")))
            for first, last in spans:
                for col in range(first, last, _CHUNK):
                    cols = slice(col, min(col + _CHUNK, last))
                    d2 = squared[start:stop, None] + squared[None, cols] - 2 * (z[start:stop] @ z[cols].T)
                    rows, found = np.nonzero(d2 <= limit)
                    rows, found = rows + start, found + col
                    yield rows[found > rows], found[found > rows]


def _position(z: np.ndarray, begin: int, end: int, value: float, side: str) -> int:
    return begin + int(np.searchsorted(z[begin:end, 1], value, side=side))
