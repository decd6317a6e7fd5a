"""Fine-tune ImageNet EfficientNet-Lite0: a head on cached frozen features, then optionally the top blocks.

Phase 1 keeps the backbone frozen (BatchNorm in inference mode), so its 1280 features are a fixed
function of each image: they are computed once per image, batched through one compiled call, and
only the dropout + softmax head trains on them, for many epochs at almost no cost. Phase 2
(``fine_tune_blocks > 0``) unfreezes the top MBConv blocks and the head convolution, BatchNorm
excepted, and trains on augmented pixels at a lower rate; the phase with the lower validation loss
is kept. Either way the model is the whole classifier (pixels 0..255 -> probabilities), so bundles
work with ``classify`` unchanged. Selected with ``TrainConfig(arch="efficientnet_lite0")``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import keras
import numpy as np

from classify_job.config import build, check
from classify_job.decisions.calibration import HeldOut
from classify_job.errors import InputError
from classify_job.nets import pretrained
from classify_job.nets.efficientnet_lite import FEATURES, block_specs, build_classifier
from classify_job.nets.inference import TTA_MODES, with_flip_tta
from classify_job.train.augment import build_augmentation
from classify_job.train.dataset import LoadedSplit, TrainingData
from classify_job.train.fit import EpochInfo, Fitted, monitor_metric
from classify_job.train.lite0_heads import (
    Head,
    fit_head,
    out_of_fold,
    penultimate,
    served_heads,
    with_fold_heads,
)
from classify_job.train.state import TrainRun, fit_run
from classify_job.versions import package_version

log = logging.getLogger(__name__)

BACKBONE = "efficientnet_lite0"  # the nested backbone model's name inside the classifier
NUM_BLOCKS = len(block_specs())


@dataclass(frozen=True)
class FinetuneOptions:
    """``TrainConfig.arch_options`` of efficientnet_lite0.

    ``augmented_views``: extra randomly augmented copies of each training image whose features are
    cached beside the clean ones (each costs one more backbone pass over the training set).
    ``fine_tune_blocks``: top MBConv blocks (of 16) unfrozen in phase 2, plus the head convolution;
    0 skips phase 2. Rates derive from ``TrainConfig.learning_rate``: the head alone trains at
    ``head_lr_factor`` times it (a linear head on fixed features converges ~10x faster than a 1e-3
    rate allows in 30 short epochs), phase 2 at ``fine_tune_lr_factor`` times it, for up to
    ``fine_tune_epochs``. ``head_width``: units of a ReLU layer between the features and the
    softmax (0: none, the softmax sits on the features). ``tta``: ``flip`` serves the mean of the
    probabilities of each image and its left-right mirror (:mod:`classify_job.nets.inference`;
    twice the compute per image), ``none`` the image alone. ``fold_heads``: serve the mean of the
    ``FOLDS`` out-of-fold heads instead of the head trained on every image, when phase 1 is kept
    (:func:`~classify_job.train.lite0_heads.out_of_fold`); a head with a hidden layer has none.
    """

    dropout: float = 0.2
    augmented_views: int = 0
    head_lr_factor: float = 10.0
    fine_tune_blocks: int = 0
    fine_tune_epochs: int = 10
    fine_tune_lr_factor: float = 0.1
    feature_batch_size: int = 64
    head_width: int = 0
    tta: str = "none"
    fold_heads: bool = True

    def __post_init__(self) -> None:
        check(
            self,
            {
                "dropout": (0.0 <= self.dropout < 1.0, "in [0, 1)"),
                "augmented_views": (self.augmented_views >= 0, ">= 0"),
                "head_lr_factor": (self.head_lr_factor > 0.0, "> 0"),
                "fine_tune_blocks": (0 <= self.fine_tune_blocks <= NUM_BLOCKS, f"in [0, {NUM_BLOCKS}]"),
                "fine_tune_epochs": (self.fine_tune_epochs >= 1, ">= 1"),
                "fine_tune_lr_factor": (0.0 < self.fine_tune_lr_factor <= 1.0, "in (0, 1]"),
                "feature_batch_size": (self.feature_batch_size >= 1, ">= 1"),
                "head_width": (self.head_width >= 0, ">= 0 (0: no hidden layer)"),
                "tta": (self.tta in TTA_MODES, f"one of {TTA_MODES}"),
            },
        )

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> FinetuneOptions:
        """Parse ``arch_options``; unknown keys are an error rather than silently ignored."""
        return build(cls, options, "efficientnet_lite0 arch_options")

    @property
    def head(self) -> Head:
        return Head(self.dropout, self.head_width, self.head_lr_factor)


@dataclass(frozen=True)
class CachedFeatures:
    """The training and validation splits as backbone features (:func:`cache_features`), the
    seconds their extraction took (None: not measured, e.g. shared by tuning trials), and with a
    test-time flip the features of the mirrored unaugmented images (:func:`mirrored_features`),
    so held-out predictions average over the mirror as the served graph does."""

    splits: TrainingData
    seconds: float | None = None
    mirrored: TrainingData | None = None


def build_pretrained_classifier(
    num_classes: int, image_size: tuple[int, int], channels: int, options: FinetuneOptions | None = None
) -> keras.Model:
    """Registered builder: frozen ImageNet Lite0 backbone + dropout + softmax head, pixels 0..255
    in; then the fold heads' ensemble layer (identity until fitted) and the test-time flip layer,
    as ``options`` asks."""
    if channels != 3:
        raise InputError(f"efficientnet_lite0 needs rgb images. Received: {channels} channel(s)")
    options = options or FinetuneOptions()
    backbone = pretrained.pretrained_backbone(image_size, fast=True)
    backbone.trainable = False
    net = build_classifier(backbone, num_classes, options.dropout, options.head_width)
    net = with_fold_heads(net) if options.fold_heads and not options.head_width else net
    return with_flip_tta(net) if options.tta == "flip" else net


def fit_pretrained(net: keras.Model, run: TrainRun) -> Fitted:
    """Registered recipe: cache the backbone's features of every image, then :func:`fit_on_features`."""
    started = time.perf_counter()
    backbone = net.get_layer(BACKBONE)
    features = cache_features(backbone, run)
    mirrored = mirrored_features(backbone, run) if run.options.tta == "flip" else None
    seconds = round(time.perf_counter() - started, 1)
    return fit_on_features(net, run, CachedFeatures(features, seconds, mirrored))


def fit_on_features(
    net: keras.Model, run: TrainRun, features: CachedFeatures, calibration: bool = True
) -> Fitted:
    """Phase 1 (the head on cached ``features``), then phase 2 on ``run.data``'s pixels if asked.

    Rows carry a ``phase`` column and epochs numbered across both phases; the phase whose best
    epoch has the lower validation loss (training loss without a validation split) is kept. When
    phase 1 is kept and ``calibration`` is on, the cached features also give every training image
    an out-of-fold prediction (``FOLDS`` heads, each trained without that image), at little cost.
    """
    options: FinetuneOptions = run.options
    total = run.config.epochs + (options.fine_tune_epochs if options.fine_tune_blocks else 0)
    on_features = dataclasses.replace(run, data=features.splits, on_epoch=_shifted(run.on_epoch, 0, total))
    history = _phase(1, fit_head(net, on_features, options.head_lr_factor))
    facts = {"feature_extraction_s": features.seconds, "kept_phase": 1}
    if options.fine_tune_blocks:
        phase_two = dataclasses.replace(run, on_epoch=_shifted(run.on_epoch, len(history), total))
        rows, facts["kept_phase"] = _phase_two(net, phase_two, history)
        history += rows
    facts = {"pretrained": {**weights_provenance(), **facts}}
    if facts["pretrained"]["kept_phase"] != 1 or not calibration:  # phase 2 made the features stale
        return Fitted(history, {**facts, "heads": served_heads(net)})
    clean = len(run.data.train)  # the cached training features start with the unaugmented view
    penult = penultimate(net, features.splits.train.images[:clean])
    reference = HeldOut(np.zeros((clean, 0)), run.data.train.labels, penult, "cached training features")
    held_out = out_of_fold(net, on_features, clean, options.head, features.mirrored)
    if held_out is not None:  # its rows: the unaugmented training images, then the validation split
        held_out = dataclasses.replace(held_out, images=(run.data.train.images, run.data.val.images))
    return Fitted(history, {**facts, "heads": served_heads(net)}, held_out, reference)


def _phase_two(
    net: keras.Model, run: TrainRun, history: list[dict[str, float]]
) -> tuple[list[dict[str, float]], int]:
    """Fine-tune after phase 1's ``history``; go back to the phase-1 weights unless phase 2
    reached a lower monitored loss. Returns phase 2's rows and the kept phase."""
    monitor = monitor_metric(run.data)
    phase_one = [v.numpy() for v in net.weights]
    rows = _phase(2, fine_tune(net, run), len(history))
    if _best(rows, monitor) < _best(history, monitor):
        return rows, 2
    net.set_weights(phase_one)
    log.info("phase 2 did not lower %s below %.4f: kept the phase-1 model", monitor, _best(history, monitor))
    return rows, 1


def cache_features(backbone: keras.Model, run: TrainRun) -> TrainingData:
    """``run.data``'s training and validation splits with each image replaced by its backbone features.

    Training images are taken once as they are and ``augmented_views`` more times through the
    training augmentation; validation images once, unaugmented. The test split is left untouched.
    """
    data, config, options = run.data, run.config, run.options
    clean = feature_function(backbone)
    parts = [extract_features(clean, data.train.images, options.feature_batch_size)]
    augmentation = build_augmentation(config.augment, config.seed) if options.augmented_views else None
    if options.augmented_views and augmentation is None:
        log.warning("augmented_views=%d ignored: augmentation is off", options.augmented_views)
    if augmentation is not None:
        augmented = feature_function(backbone, augmentation)
        parts += [
            extract_features(augmented, data.train.images, options.feature_batch_size)
            for _ in range(options.augmented_views)
        ]
    views = len(parts)
    train = LoadedSplit(np.concatenate(parts), np.tile(data.train.labels, views), data.train.relpaths * views)
    val = LoadedSplit(
        extract_features(clean, data.val.images, options.feature_batch_size),
        data.val.labels,
        data.val.relpaths,
    )
    return dataclasses.replace(data, train=train, val=val)


def mirrored_features(backbone: keras.Model, run: TrainRun) -> TrainingData:
    """The unaugmented training and validation images' left-right mirrors as backbone features."""
    features_of, batch = feature_function(backbone), run.options.feature_batch_size
    data = run.data
    train, val = (
        LoadedSplit(
            extract_features(features_of, split.images[:, :, ::-1], batch), split.labels, split.relpaths
        )
        for split in (data.train, data.val)
    )
    return dataclasses.replace(data, train=train, val=val)


def feature_function(backbone: keras.Model, augmentation: Any = None) -> Callable[[np.ndarray], np.ndarray]:
    """One compiled call from a batch of pixels to features, BatchNorm in inference mode.

    With ``augmentation`` each call first draws a random view of every image; the random state is
    threaded through the calls so successive batches and views differ.
    """
    weights = (
        [v.value for v in backbone.trainable_variables],
        [v.value for v in backbone.non_trainable_variables],
    )
    if augmentation is not None:
        augmentation.build((None, *backbone.input_shape[1:]))
    state = [v.value for v in augmentation.non_trainable_variables] if augmentation is not None else []

    @jax.jit
    def forward(weights, state, pixels):
        if augmentation is not None:
            pixels, state = augmentation.stateless_call([], state, pixels, training=True)
        features, _ = backbone.stateless_call(*weights, pixels, training=False)
        return features, state

    def call(pixels: np.ndarray) -> np.ndarray:
        nonlocal state
        features, state = forward(weights, state, pixels)
        return np.asarray(features)

    return call


def extract_features(
    features_of: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """(N, 1280) float32 features of uint8 images, in fixed-size batches (one compilation)."""
    out = np.empty((len(images), FEATURES), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        padded = np.zeros((batch_size, *batch.shape[1:]), dtype=np.float32)  # one shape, one compilation
        padded[: len(batch)] = batch
        out[start : start + len(batch)] = features_of(padded)[: len(batch)]
    return out


def fine_tune(net: keras.Model, run: TrainRun) -> list[dict[str, float]]:
    """Phase 2: unfreeze the top blocks and fit the whole classifier on augmented pixels at a low rate.

    The backbone stays called with ``training=False`` and its BatchNorm layers stay frozen, so the
    moving statistics never change; the backbone is frozen again afterwards.
    """
    config, options = run.config, run.options
    backbone = net.get_layer(BACKBONE)
    unfrozen = unfreeze_top_blocks(backbone, options.fine_tune_blocks)
    log.info("phase 2: fine-tuning %d layers of the backbone", len(unfrozen))
    phase_config = dataclasses.replace(
        config,
        epochs=options.fine_tune_epochs,
        learning_rate=config.learning_rate * options.fine_tune_lr_factor,
        warmup_epochs=0,
    )
    try:
        return fit_run(net, dataclasses.replace(run, config=phase_config))  # compiles anew: trainable changed
    finally:
        backbone.trainable = False


def unfreeze_top_blocks(backbone: keras.Model, blocks: int) -> list[str]:
    """Make the last ``blocks`` MBConv blocks and ``head_conv`` trainable, BatchNorm excepted.

    Returns the names of the layers whose weights will train.
    """
    first = NUM_BLOCKS - blocks
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = _in_top_blocks(layer.name, first) and not isinstance(
            layer, keras.layers.BatchNormalization
        )
    return [layer.name for layer in backbone.layers if layer.trainable and layer.weights]


def _in_top_blocks(name: str, first: int) -> bool:
    if name == "head_conv":
        return True
    index = name.removeprefix("block").split("_")[0]
    return name.startswith("block") and index.isdigit() and int(index) >= first


def weights_provenance() -> dict[str, Any]:
    """Where the backbone's ImageNet weights come from, for bundle.json."""
    package = pretrained.PACKAGE.replace("_", "-")
    return {
        "weights": "imagenet-1k",
        "package": package,
        "package_version": package_version(package),
        "file": pretrained.PACKAGE_FILE[-1],
        "sha256_prefix": pretrained.SOURCE_SHA256_PREFIX,
    }


def _shifted(
    on_epoch: Callable[[EpochInfo], None] | None, offset: int, total: int
) -> Callable[[EpochInfo], None] | None:
    """The user's hook with epochs counted across phases."""
    if on_epoch is None:
        return None
    return lambda info: on_epoch(dataclasses.replace(info, epoch=info.epoch + offset, epochs=total))


def _phase(phase: int, rows: list[dict[str, float]], offset: int = 0) -> list[dict[str, float]]:
    return [{"phase": phase, **row, "epoch": row["epoch"] + offset} for row in rows]


def _best(rows: Sequence[dict[str, float]], monitor: str) -> float:
    values = [row.get(monitor, math.inf) for row in rows]
    return float(np.nanmin(values)) if values else math.inf
