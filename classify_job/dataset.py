"""Folder datasets: discovery, deterministic stratified splits, decoding into arrays, class weights.

A dataset is a folder of class subfolders (``root/<class>/<image>``), or the same under
``root/train``, ``root/val`` and ``root/test``. Splits that are not given as folders are carved from
the training images by a stable hash of each file's relative path, so adding images never moves
an existing image between splits (the test set stays the test set).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classify_job.errors import DatasetError, ImageDecodeError, InputError
from classify_job.imageio import channels_for, load_image
from classify_job.scan import DEFAULT_EXTENSIONS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(DEFAULT_EXTENSIONS)
SPLIT_NAMES = ("train", "val", "test")
MAX_ARRAY_BYTES = 8 * 2**30  # decoded uint8 pixels held in memory for one split


@dataclass(frozen=True)
class Sample:
    """One image file: its path relative to the dataset root, its class index and byte size."""

    relpath: str
    label: int
    size: int


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
    splits: dict[str, tuple[Sample, ...]]
    layout: str  # "folders" (one tree, hash split) or "presplit" (train/ val/ test/ folders)

    def split_sizes(self) -> dict[str, int]:
        """Number of images in each split."""
        return {name: len(samples) for name, samples in self.splits.items()}

    def fingerprint(self) -> str:
        """Hash of every relative path and byte size: changes when any file is added, removed or edited."""
        return fingerprint_samples(s for split in self.splits.values() for s in split)


@dataclass(frozen=True)
class LoadedSplit:
    """Decoded images of one split as uint8 (N, H, W, C), their labels and relative paths."""

    images: np.ndarray
    labels: np.ndarray
    relpaths: tuple[str, ...]
    bad_files: tuple[BadFile, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def index_dataset(
    root: str | os.PathLike,
    val_split: float = 0.1,
    test_split: float = 0.1,
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
    extensions = frozenset(e.lower() for e in extensions)
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
) -> tuple[Sample, ...]:
    """Every image file under ``folder/<class>/`` (recursively), in a deterministic order.

    Class folders of ``folder`` that are not in ``classes`` are an error: their images would be
    silently dropped otherwise.
    """
    unknown = sorted(set(list_classes_loose(folder)) - set(classes))
    if unknown:
        raise DatasetError(f"{folder} has class folders not in the training classes: {unknown}")
    samples = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in extensions and path.is_file() and not path.name.startswith("."):
                samples.append(Sample(path.relative_to(root).as_posix(), label, path.stat().st_size))
    return tuple(samples)


def list_classes_loose(folder: Path) -> list[str]:
    """Visible subfolder names, without the two-class minimum (for val/ and test/ folders)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def hash_split(
    samples: Sequence[Sample], val_split: float, test_split: float
) -> dict[str, tuple[Sample, ...]]:
    """Assign samples to train/val/test by a stable hash of their relative path.

    Each file's position in [0, 1) depends on its path alone: below ``test_split`` it is a test
    image, below ``test_split + val_split`` a validation image. Every class is cut at the same
    fractions (stratified), and new files never move old ones.
    """
    splits: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    for sample in samples:
        u = stable_unit_hash(sample.relpath)
        name = "test" if u < test_split else "val" if u < test_split + val_split else "train"
        splits[name].append(sample)
    return {name: tuple(items) for name, items in splits.items()}


def stable_unit_hash(text: str) -> float:
    """A number in [0, 1) derived from ``text`` alone (SHA-256, not Python's salted ``hash``)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fingerprint_samples(samples: Iterable[Sample]) -> str:
    """Short SHA-256 over sorted ``relpath<TAB>size`` lines."""
    digest = hashlib.sha256()
    for line in sorted(f"{s.relpath}\t{s.size}" for s in samples):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


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
    samples: Sequence[Sample],
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
            images[i] = load_image(root / samples[i].relpath, image_size, color_mode).pixels
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


FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


@dataclass(frozen=True)
class AugmentConfig:
    """Random training-time transforms; all zero/"none" turns augmentation off.

    ``rotation`` is a fraction of a full turn (0.05 = up to 18 degrees), ``zoom`` and ``translate``
    fractions of the image size, ``contrast`` and ``brightness`` fractions of the 0..255 range.
    """

    flip: str = "horizontal"
    rotation: float = 0.05
    zoom: float = 0.1
    translate: float = 0.1
    contrast: float = 0.1
    brightness: float = 0.1

    def __post_init__(self) -> None:
        if self.flip not in FLIP_MODES:
            raise InputError(f"augment flip must be one of {FLIP_MODES}. Received: {self.flip!r}")
        for name in ("rotation", "zoom", "translate", "contrast", "brightness"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise InputError(f"augment {name} must be in [0, 1). Received: {value}")

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any(
            (self.rotation, self.zoom, self.translate, self.contrast, self.brightness)
        )


def build_augmentation(config: AugmentConfig, seed: int) -> keras.Sequential | None:
    """Random transforms for the training graph only (identity at inference); None when off.

    They run inside the jitted train step, so they cost no Python time per batch, and the saved
    model never contains them. Rotation and zoom each resample the image (bilinear, the costly
    ones on CPU); translation is an exact whole-pixel shift (:class:`RandomShift`), nearly free.
    """
    if not config.enabled:
        return None
    layers = []
    if config.flip != "none":
        layers.append(keras.layers.RandomFlip(config.flip, seed=seed))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="nearest", seed=seed + 1))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="nearest", seed=seed + 2))
    if config.translate:
        layers.append(RandomShift(config.translate, seed=seed + 3))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 4))
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed + 5))
    for layer in layers:
        # Keras marks its affine layers unjittable for TensorFlow's sake, which silently turns the
        # whole train step eager (~5x slower). On JAX they trace fine.
        layer.supports_jit = True
    return keras.Sequential(layers, name="augmentation")


class RandomShift(keras.layers.Layer):
    """Shift each training image by whole pixels, up to ``factor`` of its size, filling with zeros.

    Implemented as two batched products with one-hot shift matrices: exact, jittable, and far
    cheaper on CPU than a bilinear affine resample. Identity at inference.
    """

    def __init__(self, factor: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool = False) -> Any:
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        batch = keras.ops.shape(images)[0]
        rows = self._shift_matrices(batch, height)
        cols = self._shift_matrices(batch, width)
        images = keras.ops.einsum("bij,bjwc->biwc", rows, keras.ops.cast(images, "float32"))
        return keras.ops.einsum("bkw,bhwc->bhkc", cols, images)

    def _shift_matrices(self, batch: int, size: int) -> Any:
        """(batch, size, size) one-hot matrices: row i picks pixel i - shift (none when out of range)."""
        limit = round(self.factor * size)
        shifts = keras.random.randint((batch, 1, 1), -limit, limit + 1, seed=self.seed_generator)
        index = keras.ops.arange(size)
        return keras.ops.cast(keras.ops.equal(index[None, None, :] + shifts, index[None, :, None]), "float32")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}
