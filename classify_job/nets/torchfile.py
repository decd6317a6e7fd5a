"""Read legacy (pre-1.6) PyTorch files with pickle and numpy, never running code.

Such a file holds pickles for the magic number, protocol version, system info, the state dict
(tensors refer to storages by persistent id) and the storage keys, then each storage's raw
little-endian bytes after an 8-byte element count. A restricted unpickler admits only the four
globals such a file needs, so the file cannot run code.
"""

from __future__ import annotations

import collections
import os
import pickle
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from classify_job.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, _Storage) or not all(isinstance(v, int) for v in (offset, *shape, *stride)):
        raise WeightsError(f"malformed tensor record. Received: {storage!r}, {offset!r}, {shape!r}")
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch", "FloatStorage"): _StorageType("<f4"),
    ("torch", "LongStorage"): _StorageType("<i8"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise WeightsError(f"weights file refers to a forbidden global: {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        # (kind, storage type, key, device, element count, view metadata); views predate torch 1.0
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and pid[5] is None):
            raise WeightsError(f"unsupported persistent id in weights file. Received: {pid!r}")
        _, storage_type, key, _device, numel, _view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise WeightsError(f"malformed storage record. Received: {pid!r}")
        return _Storage(str(key), storage_type.dtype, numel)


def read_legacy_torch(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a legacy-format torch state dict into NumPy arrays (no torch, no arbitrary code)."""
    try:
        with open(path, "rb") as f:
            refs, storages = _read_records(f)
    except WeightsError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsError(f"cannot read {path} as a legacy torch file: {type(exc).__name__}: {exc}") from exc
    return {name: _materialise(name, ref, storages) for name, ref in refs.items()}


def _read_records(f: BinaryIO) -> tuple[dict[str, _TensorRef], dict[str, np.ndarray]]:
    def load() -> Any:
        return _RestrictedUnpickler(f).load()

    if load() != LEGACY_MAGIC or load() != LEGACY_PROTOCOL:
        raise WeightsError("not a legacy torch file (bad magic number or protocol version)")
    if not load().get("little_endian"):
        raise WeightsError("big-endian torch files are not supported")
    refs, keys = load(), load()
    if not isinstance(refs, dict) or not all(isinstance(r, _TensorRef) for r in refs.values()):
        raise WeightsError("the weights file does not hold a flat state dict of tensors")
    dtypes = {ref.storage.key: ref.storage.dtype for ref in refs.values()}
    storages = {}
    for key in keys:
        if key not in dtypes:
            raise WeightsError(f"storage {key!r} is listed but no tensor uses it")
        numel = int.from_bytes(f.read(8), "little", signed=True)
        data = f.read(numel * np.dtype(dtypes[key]).itemsize)
        storages[key] = np.frombuffer(data, dtype=dtypes[key], count=numel)
    return refs, storages


def _materialise(name: str, ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    storage = storages.get(ref.storage.key)
    if storage is None or storage.size != ref.storage.numel:
        raise WeightsError(f"{name}: storage {ref.storage.key} is missing or truncated")
    if len(ref.shape) != len(ref.stride) or ref.offset < 0 or min((*ref.shape, *ref.stride), default=0) < 0:
        raise WeightsError(f"{name}: malformed shape {ref.shape} / stride {ref.stride}")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if 0 in ref.shape:
        return np.zeros(ref.shape, storage.dtype)
    if last >= storage.size:
        raise WeightsError(f"{name}: tensor reaches past the end of its storage")
    strides = [s * storage.itemsize for s in ref.stride]
    view = np.lib.stride_tricks.as_strided(storage[ref.offset :], ref.shape, strides, writeable=False)
    return np.array(view, dtype=storage.dtype.newbyteorder("="))
