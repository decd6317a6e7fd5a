"""EfficientNet-Lite0 as a Keras functional model: B0's block layout without squeeze-excitation,
ReLU6, BatchNorm epsilon 1e-3, TensorFlow "SAME" padding, stem 32 and head 1280 channels.

Models take float32 RGB pixels in 0..255 and normalise them inside with ``(x - 127.5) / 128``,
the input the published Lite weights were trained on. Layer names are stable (``block{i}_...``
with ``i`` the torch ``_blocks.{i}`` index) so :mod:`classify_job.pretrained` can map weights.
"""

from __future__ import annotations

from typing import NamedTuple

import keras

from classify_job.nets.fast_layers import FastDepthwiseConv2D, FastPointwiseConv2D

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
FEATURES = HEAD_FILTERS
IMAGENET_CLASSES = 1000


class Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters: int


# EfficientNet-B0 stages; Lite0 uses them unscaled.
STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)


def block_specs() -> list[tuple[int, int, int, int, int]]:
    """Every MBConv block in order as (kernel, stride, expand, in_filters, out_filters)."""
    specs, in_filters = [], STEM_FILTERS
    for stage in STAGES:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            specs.append((stage.kernel, stride, stage.expand, in_filters, stage.filters))
            in_filters = stage.filters
    return specs


class _Convs(NamedTuple):
    """Makes the network's 1x1 and depthwise convolutions, fast or stock, with one initializer."""

    fast: bool
    initializer: str

    def pointwise(self, x, filters: int, name: str):
        if self.fast:
            return FastPointwiseConv2D(filters, kernel_initializer=self.initializer, name=name)(x)
        return keras.layers.Conv2D(
            filters, 1, use_bias=False, kernel_initializer=self.initializer, name=name
        )(x)

    def depthwise(self, x, kernel: int, stride: int, name: str):
        layer = FastDepthwiseConv2D if self.fast else keras.layers.DepthwiseConv2D
        return layer(
            kernel, stride, padding="same", use_bias=False, depthwise_initializer=self.initializer, name=name
        )(x)


def _bn_relu6(x, name: str, activate: bool = True):
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def _mbconv(x, index: int, spec: tuple[int, int, int, int, int], convs: _Convs):
    kernel, stride, expand, in_filters, out_filters = spec
    prefix = f"block{index}"
    inputs = x
    if expand != 1:
        x = convs.pointwise(x, in_filters * expand, f"{prefix}_expand_conv")
        x = _bn_relu6(x, f"{prefix}_expand")
    x = convs.depthwise(x, kernel, stride, f"{prefix}_dwconv")
    x = _bn_relu6(x, f"{prefix}_dw")
    x = convs.pointwise(x, out_filters, f"{prefix}_project_conv")
    x = _bn_relu6(x, f"{prefix}_project", activate=False)
    if stride == 1 and in_filters == out_filters:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def build_backbone(
    image_size: int | tuple[int, int] = 224, fast: bool = True, random_init: bool = True
) -> keras.Model:
    """EfficientNet-Lite0 from 0..255 RGB pixels of ``image_size`` to 1280 average-pooled features.

    ``fast=False`` builds the same network, with the same weights, from the stock
    ``DepthwiseConv2D`` / ``Conv2D`` layers (for benchmarks and equality tests).
    ``random_init=False`` starts kernels at zero for weights that are about to be loaded: on CPU,
    XLA compiles a random initializer per kernel shape, which costs ~10 s per model build.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    convs = _Convs(fast, "glorot_uniform" if random_init else "zeros")
    inputs = keras.Input((height, width, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.5 / 128.0, name="normalize")(inputs)
    x = keras.layers.Conv2D(
        STEM_FILTERS,
        3,
        2,
        padding="same",
        use_bias=False,
        kernel_initializer=convs.initializer,
        name="stem_conv",
    )(x)
    x = _bn_relu6(x, "stem")
    for index, spec in enumerate(block_specs()):
        x = _mbconv(x, index, spec, convs)
    x = convs.pointwise(x, HEAD_FILTERS, "head_conv")
    x = _bn_relu6(x, "head")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, features, name="efficientnet_lite0")


def build_classifier(
    backbone: keras.Model, num_classes: int, dropout: float = 0.2, head_width: int = 0
) -> keras.Model:
    """Backbone + dropout (+ a ReLU ``head_hidden`` layer of ``head_width`` units, when not 0) +
    softmax ``predictions`` layer; the backbone stays a nested model.

    The backbone is called with ``training=False`` so its BatchNorm statistics stay frozen even
    when it is unfrozen for fine-tuning (as the Keras transfer-learning guide advises).
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")
    inputs = keras.Input(backbone.input_shape[1:], name="pixels")
    x = backbone(inputs, training=False)
    for layer in head_layers(num_classes, dropout, head_width):
        x = layer(x)
    return keras.Model(inputs, x, name=f"{backbone.name}_classifier")


def head_layers(num_classes: int, dropout: float, head_width: int = 0) -> list[keras.layers.Layer]:
    """The classifier's head, features to probabilities: the layers and names every head shares."""
    hidden = [keras.layers.Dense(head_width, activation="relu", name="head_hidden")] if head_width else []
    return [
        keras.layers.Dropout(dropout, name="head_dropout"),
        *hidden,
        keras.layers.Dense(num_classes, activation="softmax", name="predictions"),
    ]


def build_imagenet_classifier(
    image_size: int | tuple[int, int] = 224, fast: bool = True, random_init: bool = True
) -> keras.Model:
    """The 1000-class ImageNet model the published Lite0 weights belong to (untrained here)."""
    return build_classifier(build_backbone(image_size, fast, random_init), IMAGENET_CLASSES)
