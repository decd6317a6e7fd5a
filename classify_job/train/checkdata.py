"""Inspect a folder dataset before training: unreadable files, duplicates, near duplicates, misnamed
formats, balance.

:func:`check_data` reads every file once (hash, full decode and near-duplicate signature from the
same bytes) and returns a :class:`DataReport`; it never modifies the data and never raises for a bad
file. :mod:`classify_job.train.dataplots` draws it.
"""

from __future__ import annotations

import io
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classify_job.errors import DatasetError, ImageDecodeError
from classify_job.hashing import content_hash_bytes
from classify_job.imageio import open_image
from classify_job.train.dataset import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    BadFile,
    list_class_folders,
    list_classes_loose,
)
from classify_job.train.nearduplicates import NearDuplicateGroup, group_near_duplicates, image_signature
from classify_job.walk import FileEntry, WalkStats, escape_name, iter_files

# Which Pillow format each extension promises.
EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
IMBALANCE_WARNING = 3.0
SMALL_IMAGE = 32


@dataclass(frozen=True)
class FileInfo:
    """What one file turned out to be (``error`` is set, and the rest empty, when it could not be read).

    ``path`` is what ``open()`` takes; ``signature`` is its near-duplicate signature."""

    relpath: str
    label: str
    split: str
    size: int
    sha256: str
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    error: str = ""
    path: str = ""
    signature: bytes = b""


@dataclass(frozen=True)
class DuplicateGroup:
    """Files with identical bytes; ``conflicting`` when they sit under different labels."""

    sha256: str
    relpaths: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1


@dataclass(frozen=True)
class FormatMismatch:
    """A file whose content format is not what its extension says (e.g. a PNG named .jpg)."""

    relpath: str
    extension: str
    actual_format: str


@dataclass(frozen=True)
class SizeSummary:
    """Minimum, median and maximum of image widths and heights, and how many are small."""

    min_width: int
    median_width: int
    max_width: int
    min_height: int
    median_height: int
    max_height: int
    small_images: int


@dataclass(frozen=True)
class DataReport:
    """Everything :func:`check_data` found; ``problems`` lists the findings a person should act on."""

    root: Path
    layout: str
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    split_counts: dict[str, dict[str, int]]
    num_files: int
    corrupt: tuple[BadFile, ...]
    duplicates: tuple[DuplicateGroup, ...]
    format_mismatches: tuple[FormatMismatch, ...]
    ignored_files: tuple[str, ...]
    sizes: SizeSummary | None
    modes: dict[str, int]
    formats: dict[str, int]
    near_duplicates: tuple[NearDuplicateGroup, ...] = ()
    files: tuple[FileInfo, ...] = ()

    @property
    def imbalance_ratio(self) -> float:
        """Largest class count over smallest (inf when a class is empty)."""
        counts = list(self.class_counts.values())
        if not counts:
            return 0.0
        return max(counts) / min(counts) if min(counts) else float("inf")

    @property
    def problems(self) -> tuple[str, ...]:
        """One-line findings, most serious first; empty when the data looks fine."""
        conflicting = [g for g in self.duplicates if g.conflicting]
        near_conflicting = [g for g in self.near_duplicates if g.conflicting]
        checks = [
            (len(self.classes) < 2, f"found {len(self.classes)} class folders; training needs at least 2"),
            (self.corrupt, f"{len(self.corrupt)} unreadable files (training skips them)"),
            (conflicting, f"{len(conflicting)} groups of identical files under different labels"),
            (self.duplicates, f"{len(self.duplicates)} groups of duplicate files"),
            (
                near_conflicting,
                f"{len(near_conflicting)} groups of near-identical images under different labels",
            ),
            (self.near_duplicates, f"{len(self.near_duplicates)} groups of near-duplicate images"),
            (
                self.format_mismatches,
                f"{len(self.format_mismatches)} files whose content is not their extension",
            ),
            (self.imbalance_ratio >= IMBALANCE_WARNING, f"classes imbalanced {self.imbalance_ratio:.1f}x"),
        ]
        found = [message for failed, message in checks if failed]
        return tuple(found)


def check_data(
    root: str | os.PathLike, extensions: frozenset[str] | set[str] = IMAGE_EXTENSIONS, workers: int = 4
) -> DataReport:
    """Read every file of the dataset at ``root`` (flat or train/val/test layout) and report on it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found. Received: {root}")
    layout = "presplit" if (root / "train").is_dir() else "folders"
    splits = [name for name in SPLIT_NAMES if (root / name).is_dir()] if layout == "presplit" else [""]
    stats = WalkStats(ignored_paths=[])
    candidates = [item for split in splits for item in _list_files(root, split, extensions, stats)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        infos = list(pool.map(lambda item: inspect_file(*item), candidates))
    return _summarise(root, layout, splits, infos, tuple(sorted(stats.ignored_paths)))


def _list_files(root: Path, split: str, extensions: frozenset[str] | set[str], stats: WalkStats) -> list:
    """(entry, label, split) of every image under ``root/split/<label>/``, by the one walker's rules."""
    folder = root / split if split else root
    files = []
    for name in list_class_folders(folder):
        prefix = (folder / name).relative_to(root).as_posix() + "/"
        for entry in iter_files(folder / name, extensions, prefix=prefix, stats=stats):
            files.append((entry, escape_name(name), split or "all"))
    return files


def inspect_file(entry: FileEntry, label: str, split: str) -> FileInfo:
    """Hash the bytes, fully decode them and take the near-duplicate signature; any failure is
    recorded in ``error``."""
    relpath, path = entry.relpath, entry.path
    if entry.stat_error:
        return FileInfo(relpath, label, split, 0, "", error=entry.stat_error, path=path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FileInfo(relpath, label, split, 0, "", error=f"cannot read: {exc.strerror or exc}", path=path)
    digest = content_hash_bytes(data)
    try:
        with open_image(io.BytesIO(data)) as opened:
            img = opened.image
            fmt, mode, (width, height) = img.format or "", img.mode, img.size
            img.load()
            signature = image_signature(img)
    except ImageDecodeError as exc:
        return FileInfo(relpath, label, split, len(data), digest, error=str(exc), path=path)
    return FileInfo(
        relpath, label, split, len(data), digest, fmt, mode, width, height, path=path, signature=signature
    )


def _summarise(
    root: Path, layout: str, splits: list[str], infos: list[FileInfo], ignored: tuple[str, ...]
) -> DataReport:
    good = [i for i in infos if not i.error]
    classes = tuple(sorted({i.label for i in infos} | set(_class_names(root, splits))))
    split_counts = {}
    for split in [name or "all" for name in splits]:
        counts = Counter(i.label for i in good if i.split == split)
        split_counts[split] = {c: counts[c] for c in classes}
    totals = Counter(i.label for i in good)
    return DataReport(
        root=root,
        layout=layout,
        classes=classes,
        class_counts={c: totals[c] for c in classes},
        split_counts=split_counts,
        num_files=len(infos),
        corrupt=tuple(BadFile(i.relpath, i.error) for i in infos if i.error),
        duplicates=find_duplicates(good),
        format_mismatches=find_format_mismatches(good),
        ignored_files=ignored,
        sizes=summarise_sizes(good),
        modes=dict(Counter(i.mode for i in good).most_common()),
        formats=dict(Counter(i.format for i in good).most_common()),
        near_duplicates=find_near_duplicates(good),
        files=tuple(infos),
    )


def _class_names(root: Path, splits: list[str]) -> list[str]:
    return [label for split in splits for label in list_classes_loose(root / split if split else root)]


def find_duplicates(infos: list[FileInfo]) -> tuple[DuplicateGroup, ...]:
    """Groups of two or more files with the same SHA-256, conflicting-label groups first."""
    groups: dict[str, list[FileInfo]] = defaultdict(list)
    for info in infos:
        groups[info.sha256].append(info)
    found = [
        DuplicateGroup(digest, tuple(i.relpath for i in members), tuple(i.label for i in members))
        for digest, members in groups.items()
        if len(members) > 1
    ]
    return tuple(sorted(found, key=lambda g: (not g.conflicting, g.relpaths)))


def find_near_duplicates(infos: list[FileInfo]) -> tuple[NearDuplicateGroup, ...]:
    """Groups of images that look alike but differ in bytes (one file per content; exact copies
    are :func:`find_duplicates`' groups)."""
    distinct: dict[str, FileInfo] = {}
    for info in infos:
        distinct.setdefault(info.sha256, info)
    firsts = list(distinct.values())
    return group_near_duplicates(
        [i.relpath for i in firsts], [i.label for i in firsts], [i.signature for i in firsts]
    )


def find_format_mismatches(infos: list[FileInfo]) -> tuple[FormatMismatch, ...]:
    """Files whose decoded format is not the one their extension names."""
    found = []
    for info in infos:
        extension = Path(info.relpath).suffix.lower()
        expected = EXTENSION_FORMATS.get(extension)
        if expected is not None and info.format and info.format != expected:
            found.append(FormatMismatch(info.relpath, extension, info.format))
    return tuple(found)


def summarise_sizes(infos: list[FileInfo]) -> SizeSummary | None:
    """Width and height statistics over readable images (None when there are none)."""
    if not infos:
        return None
    widths = np.array([i.width for i in infos])
    heights = np.array([i.height for i in infos])
    return SizeSummary(
        min_width=int(widths.min()),
        median_width=int(np.median(widths)),
        max_width=int(widths.max()),
        min_height=int(heights.min()),
        median_height=int(np.median(heights)),
        max_height=int(heights.max()),
        small_images=int(np.sum(np.minimum(widths, heights) < SMALL_IMAGE)),
    )
