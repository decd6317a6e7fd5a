"""Fashion-MNIST from the Debian ``dataset-fashion-mnist`` package: IDX reader and folder exporter.

The benchmark exports the official split as ``train/<class>/*.png`` and ``test/<class>/*.png`` so
that training goes through the same folder-dataset code as any user's data.
"""

from __future__ import annotations

import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from classify_job import atomic
from classify_job.errors import DatasetError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_PACKAGE = "dataset-fashion-mnist"
CLASSES = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
SPLITS = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_DONE_MARKER = ".export-complete"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a NumPy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file. Received header: {data[:4]!r}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DatasetError(f"{path}: header says {shape} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def load_split(split: str, source: str | os.PathLike = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of the official ``train`` or ``test`` split."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {sorted(SPLITS)}. Received: {split!r}")
    source = Path(source)
    prefix = SPLITS[split]
    images_path = source / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.is_file():
        raise DatasetError(
            f"{images_path} not found; install the Debian package: "
            f"apt-get update && apt-get install -y {APT_PACKAGE}"
        )
    images = read_idx(images_path)
    labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def export_folders(out_dir: str | os.PathLike, source: str | os.PathLike = DEFAULT_DIR) -> Path:
    """Write the official split as ``out_dir/{train,test}/<class>/<index>.png``; returns ``out_dir``.

    A marker file makes the export idempotent: a finished export is not written twice.
    """
    out_dir = Path(out_dir)
    if (out_dir / _DONE_MARKER).is_file():
        return out_dir
    for split in SPLITS:
        images, labels = load_split(split, source)
        for name in CLASSES:
            (out_dir / split / name).mkdir(parents=True, exist_ok=True)
        paths = [out_dir / split / CLASSES[label] / f"{i:05d}.png" for i, label in enumerate(labels)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(_write_png, paths, images))
    atomic.write_text(out_dir / _DONE_MARKER, "ok\n")
    return out_dir


def _write_png(path: Path, pixels: np.ndarray) -> None:
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
