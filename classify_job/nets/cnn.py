"""A small VGG-style CNN trained from scratch, shaped for CPU training with Keras on JAX.

Why this shape: on a 2-core CPU the convolution backward pass dominates training time and it
scales with (pixels x channels^2). So the stem is a lossless space-to-depth (2x2 pixels become 4
channels) instead of full-resolution convolutions: every later convolution runs on 4x fewer
positions. Stages of two 3x3 conv-BN-ReLU blocks follow, halving resolution with max-pooling until
the feature map is at most 4 pixels wide (28 -> 14 -> 7 -> 3 for Fashion-MNIST); channels double
per stage up to ``top_width`` (multiples of 16). Global average pooling, dropout and a softmax head
finish it. The pooling is :class:`~classify_job.nets.fast_layers.FastMaxPool2D` (a step takes 0.91x
the time); every other layer is stock Keras, so bundles load in Keras' safe mode. ``tta="flip"``
serves each image averaged with its mirror (:mod:`classify_job.nets.inference`), in every runtime.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from classify_job.errors import InputError
from classify_job.nets.fast_layers import FastMaxPool2D
from classify_job.nets.inference import TTA_MODES, with_flip_tta

MIN_WIDTH = 32
FINAL_RESOLUTION = 4
LARGE_INPUT = 128  # from this size on, the stem folds 4x4 patches instead of 2x2
# Keras' default 0.99 lets the inference statistics lag ~100 steps behind the weights: on small
# datasets (tens of steps per epoch) validation loss, and so early stopping, would judge stale stats.
BN_MOMENTUM = 0.9


def build_cnn(num_classes: int, image_size: tuple[int, int], channels: int, **kwargs) -> keras.Model:
    """Registered builder: the default CNN for ``image_size`` (height, width) and ``channels``."""
    return cnn(num_classes, image_size, channels, **kwargs)


def cnn(
    num_classes: int,
    image_size: tuple[int, int],
    channels: int,
    top_width: int = 256,
    dropout: float = 0.3,
    tta: str = "none",
    name: str = "cnn",
) -> keras.Model:
    """Build the CNN; takes float32 pixels in 0..255 and returns class probabilities.

    ``tta``: ``"flip"`` ends it in a FlipTTA layer, so it is served averaged over each image and
    its left-right mirror; ``"none"`` serves it as it is."""
    _check(num_classes, image_size, channels, top_width, dropout, tta)
    inputs = keras.Input((*image_size, channels), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = space_to_depth(x, 4 if min(image_size) >= LARGE_INPUT else 2)
    for stage, width in enumerate(stage_widths(min(x.shape[1], x.shape[2]), top_width)):
        if stage > 0:
            x = FastMaxPool2D(name=f"pool{stage}")(x)
        x = conv_bn_relu(x, width, f"stage{stage}_conv1")
        x = conv_bn_relu(x, width, f"stage{stage}_conv2")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    model = keras.Model(inputs, outputs, name=name)
    return with_flip_tta(model) if tta == "flip" else model


def stage_widths(resolution: int, top_width: int) -> list[int]:
    """Channels per stage: enough stages to pool ``resolution`` down to <= 4, doubling to ``top_width``."""
    stages = 1
    while resolution > FINAL_RESOLUTION:
        resolution //= 2
        stages += 1
    return [max(MIN_WIDTH, top_width // 2 ** (stages - 1 - i)) for i in range(stages)]


def conv_bn_relu(x, width: int, name: str):
    """3x3 convolution (no bias: BatchNorm has one), BatchNorm, ReLU."""
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def space_to_depth(x, block: int):
    """Fold each ``block`` x ``block`` patch into channels (lossless stride): H, W -> H/b, W/b, C*b*b.

    Odd sizes are zero-padded first. Built from Reshape and Permute so it serializes as stock layers.
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    pad_h, pad_w = -height % block, -width % block
    if pad_h or pad_w:
        x = layers.ZeroPadding2D(((0, pad_h), (0, pad_w)), name="s2d_pad")(x)
        height, width = height + pad_h, width + pad_w
    x = layers.Reshape((height // block, block, width // block, block, channels), name="s2d_split")(x)
    x = layers.Permute((1, 3, 2, 4, 5), name="s2d_permute")(x)
    return layers.Reshape((height // block, width // block, block * block * channels), name="s2d_merge")(x)


def _check(
    num_classes: int, image_size: tuple[int, int], channels: int, top_width: int, dropout: float, tta: str
) -> None:
    if num_classes < 2:
        raise InputError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    if len(image_size) != 2 or min(image_size) < 8:
        raise InputError(f"image_size must be (height, width), each >= 8. Received: image_size={image_size}")
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3. Received: channels={channels}")
    if top_width < 16 or top_width % 16:
        raise InputError(f"top_width must be a multiple of 16. Received: top_width={top_width}")
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    if tta not in TTA_MODES:
        raise InputError(f"tta must be one of {TTA_MODES}. Received: tta={tta!r}")
    if math.prod(image_size) > 1024 * 1024:
        raise InputError(f"image_size is too large for CPU training. Received: image_size={image_size}")
