"""Folder datasets: discovery, deterministic stratified splits, decoding into arrays, class weights.

A dataset is a folder of class subfolders (``root/<class>/<image>``), or the same under
``root/train``, ``root/val`` and ``root/test``. Splits that are not given as folders are carved from
the training images by a stable hash of each file's relative path, so adding images never moves
an existing image between splits (the test set stays the test set).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classify_job.errors import DatasetError, ImageDecodeError, InputError
from classify_job.hashing import dataset_fingerprint, split_position
from classify_job.imageio import channels_for, load_image
from classify_job.walk import DEFAULT_EXTENSIONS, escape_name, fs_path, iter_files, normalize_extensions

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(DEFAULT_EXTENSIONS)
SPLIT_NAMES = ("train", "val", "test")
VAL_SPLIT = TEST_SPLIT = 0.1  # the default fractions carved from one tree (train config, evaluate)
MAX_ARRAY_BYTES = 8 * 2**30  # decoded uint8 pixels held in memory for one split


@dataclass(frozen=True)
class LabelledFile:
    """One image file: its path relative to the dataset root (escaped text, see
    :func:`classify_job.walk.escape_name`, with the raw bytes when escaped), class index and size."""

    relpath: str
    label: int
    size: int
    relpath_bytes: bytes | None = None


@dataclass(frozen=True)
class BadFile:
    """A file that was skipped, and why."""

    relpath: str
    reason: str


@dataclass(frozen=True)
class DatasetIndex:
    """Classes and the samples of each split; nothing decoded yet."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, tuple[LabelledFile, ...]]
    layout: str  # "folders" (one tree, hash split) or "presplit" (train/ val/ test/ folders)

    def split_sizes(self) -> dict[str, int]:
        """Number of images in each split."""
        return {name: len(samples) for name, samples in self.splits.items()}

    def fingerprint(self) -> str:
        """Hash of every relative path and byte size: changes when any file is added, removed or edited."""
        return dataset_fingerprint((f.relpath, f.size) for split in self.splits.values() for f in split)


@dataclass(frozen=True)
class LoadedSplit:
    """Decoded images of one split as uint8 (N, H, W, C), their labels and relative paths."""

    images: np.ndarray
    labels: np.ndarray
    relpaths: tuple[str, ...]
    bad_files: tuple[BadFile, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class TrainingData:
    """Decoded splits plus what the bundle records about them."""

    index: DatasetIndex
    train: LoadedSplit
    val: LoadedSplit
    test: LoadedSplit

    @property
    def bad_files(self) -> tuple[BadFile, ...]:
        return self.train.bad_files + self.val.bad_files + self.test.bad_files

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def index_dataset(
    root: str | os.PathLike,
    val_split: float = VAL_SPLIT,
    test_split: float = TEST_SPLIT,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> DatasetIndex:
    """Find classes and images under ``root`` and assign each image to train, val or test.

    With ``train/`` (and optionally ``val/``, ``test/``) folders those are used as given, and only a
    missing val or test split is carved from ``train/``. Otherwise all three come from one tree.
    """
    root = Path(root)
    _check_fractions(val_split, test_split)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found. Received: {root}")
    extensions = normalize_extensions(extensions)
    if (root / "train").is_dir():
        return _index_presplit(root, val_split, test_split, extensions)
    classes = list_classes(root)
    samples = list_samples(root, root, classes, extensions)
    splits = hash_split(samples, val_split, test_split)
    return _checked(DatasetIndex(root, classes, splits, "folders"))


def _index_presplit(
    root: Path, val_split: float, test_split: float, extensions: frozenset[str]
) -> DatasetIndex:
    classes = list_classes(root / "train")
    given = {n: list_samples(root, root / n, classes, extensions) for n in SPLIT_NAMES if (root / n).is_dir()}
    carved = hash_split(
        given["train"],
        0.0 if "val" in given else val_split,
        0.0 if "test" in given else test_split,
    )
    splits = {name: given[name] if name in given else carved[name] for name in SPLIT_NAMES}
    splits["train"] = carved["train"]
    return _checked(DatasetIndex(root, classes, splits, "presplit"))


def list_classes(folder: Path) -> tuple[str, ...]:
    """Sorted names of the visible subfolders of ``folder``: the class labels."""
    classes = tuple(list_classes_loose(folder))
    if len(classes) < 2:
        raise DatasetError(f"a dataset needs at least two class folders in {folder}. Received: {classes}")
    return classes


def list_samples(
    root: Path, folder: Path, classes: Sequence[str], extensions: frozenset[str]
) -> tuple[LabelledFile, ...]:
    """Every image file under ``folder/<class>/`` (recursively), in a deterministic order.

    Class folders of ``folder`` that are not in ``classes`` are an error: their images would be
    silently dropped otherwise.
    """
    folders = {escape_name(name): name for name in list_class_folders(folder)}
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DatasetError(f"{folder} has class folders not in the training classes: {unknown}")
    files = []
    for label, name in enumerate(classes):
        if name in folders:
            prefix = (folder / folders[name]).relative_to(root).as_posix() + "/"
            entries = iter_files(folder / folders[name], extensions, prefix=prefix)
            files += [
                LabelledFile(e.relpath, label, e.size, e.relpath_bytes)
                for e in entries
                if e.stat_error is None
            ]
    return tuple(files)


def list_classes_loose(folder: Path) -> list[str]:
    """Class labels from the visible subfolders (as text, escaped if need be), without the
    two-class minimum (for val/ and test/ folders)."""
    return sorted(escape_name(name) for name in list_class_folders(folder))


def list_class_folders(folder: Path) -> list[str]:
    """The visible subfolder names of ``folder`` as the OS gives them."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def hash_split(
    samples: Sequence[LabelledFile], val_split: float, test_split: float
) -> dict[str, tuple[LabelledFile, ...]]:
    """Assign samples to train/val/test by a stable hash of their relative path.

    Each file's position in [0, 1) depends on its path alone: below ``test_split`` it is a test
    image, below ``test_split + val_split`` a validation image. Every class is cut at the same
    fractions (stratified), and new files never move old ones.
    """
    splits: dict[str, list[LabelledFile]] = {name: [] for name in SPLIT_NAMES}
    for sample in samples:
        u = split_position(sample.relpath)
        name = "test" if u < test_split else "val" if u < test_split + val_split else "train"
        splits[name].append(sample)
    return {name: tuple(items) for name, items in splits.items()}


def _checked(index: DatasetIndex) -> DatasetIndex:
    counts = np.bincount([s.label for s in index.splits["train"]], minlength=len(index.classes))
    empty = [index.classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(f"these classes have no training images under {index.root}: {empty}")
    return index


def _check_fractions(val_split: float, test_split: float) -> None:
    if not (0.0 <= val_split < 1.0 and 0.0 <= test_split < 1.0 and val_split + test_split < 1.0):
        raise InputError(
            f"val_split and test_split must be in [0, 1) and sum below 1. "
            f"Received: val_split={val_split}, test_split={test_split}"
        )


def load_split(
    root: str | os.PathLike,
    samples: Sequence[LabelledFile],
    image_size: tuple[int, int],
    color_mode: str = "rgb",
    workers: int = 4,
    max_bytes: int = MAX_ARRAY_BYTES,
) -> LoadedSplit:
    """Decode ``samples`` with :func:`classify_job.imageio.load_image` into one uint8 array.

    Pillow releases the GIL while decoding, so a few threads keep both cores busy. Files that
    cannot be decoded are skipped and returned in ``bad_files``; they never stop training.
    """
    root = Path(root)
    channels = channels_for(color_mode)
    needed = len(samples) * image_size[0] * image_size[1] * channels
    if needed > max_bytes:
        raise DatasetError(
            f"{len(samples)} images at {image_size} need {needed / 2**30:.1f} GiB in memory, over the "
            f"{max_bytes / 2**30:.1f} GiB limit; use a smaller image size. Received: image_size={image_size}"
        )
    images = np.empty((len(samples), image_size[0], image_size[1], channels), dtype=np.uint8)
    ok = np.zeros(len(samples), dtype=bool)
    bad: list[BadFile] = []

    def decode(i: int) -> None:
        try:
            path = fs_path(root, samples[i].relpath, samples[i].relpath_bytes)
            images[i] = load_image(path, image_size, color_mode).pixels
            ok[i] = True
        except ImageDecodeError as exc:
            bad.append(BadFile(samples[i].relpath, str(exc)))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(decode, range(len(samples))))
    if bad:
        log.warning("skipped %d unreadable files under %s", len(bad), root)
    keep = np.flatnonzero(ok)
    return LoadedSplit(
        images=images[keep] if len(keep) < len(samples) else images,
        labels=np.array([samples[i].label for i in keep], dtype=np.int32),
        relpaths=tuple(samples[i].relpath for i in keep),
        bad_files=tuple(sorted(bad, key=lambda b: b.relpath)),
    )


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Balanced weights ``n / (k * count_c)``: each class contributes equally to the loss.

    Classes absent from ``labels`` get weight 0 (they cannot contribute anything anyway).
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return {i: round(float(w), 6) for i, w in enumerate(weights)}
