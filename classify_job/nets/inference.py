"""The inference form of a classifier: uint8 pixels in; probabilities and penultimate features out.

Every runtime serves this form, so the ``unfamiliar`` score, which needs the features, works on
all of them, and feeding it costs no cast or copy outside the graph.

A classifier may end in a :class:`FlipTTA` layer (identity while it trains), which says how it is
served: ``flip="horizontal"`` runs each image and its left-right mirror through the network and
averages their probabilities (twice the compute per image); the features stay the unmirrored
image's, so the unfamiliar score sees what it was fitted on (cached features of unmirrored
training images). Graphs are built from this form, so every runtime averages alike; a model
without the layer (every bundle written before it) is served as it always was.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

PROBABILITIES = "probabilities"
FEATURES = "features"
FLIPS = ("none", "horizontal")
TTA_MODES = ("flip", "none")  # what `--tta` takes: "flip" serves the horizontal flip


@keras.saving.register_keras_serializable(package="classify_job")
class FlipTTA(keras.layers.Layer):
    """Identity on the classifier's probabilities; records the test-time flip that
    :func:`inference_model` serves the classifier with (``"none"`` or ``"horizontal"``)."""

    def __init__(self, flip: str = "horizontal", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if flip not in FLIPS:
            raise ValueError(f"flip must be one of {FLIPS}. Received: flip={flip!r}")
        self.flip = flip

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "flip": self.flip}


def with_flip_tta(model: keras.Model, flip: str = "horizontal") -> keras.Model:
    """``model`` (its layers shared, not copied) ending in a :class:`FlipTTA` layer."""
    outputs = FlipTTA(flip, name="flip_tta")(model.outputs[0])
    return keras.Model(model.inputs, outputs, name=model.name)


def served_flip(model: keras.Model) -> str:
    """The flip ``model`` is served with: its :class:`FlipTTA` layer's, else ``"none"``."""
    marks = [layer.flip for layer in model.layers if isinstance(layer, FlipTTA)]
    return marks[-1] if marks else "none"


def output_layer(model: keras.Model) -> keras.layers.Layer:
    """The classifier's last Dense layer, whose input is the penultimate feature vector."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(f"model {model.name!r} has no Dense output layer")
    return dense[-1]


def inference_model(model: keras.Model) -> keras.Model:
    """``model`` with a uint8 input and two named outputs: probabilities and features; with
    its recorded test-time flip (:func:`served_flip`) the probabilities are averaged over
    the image and its mirror."""
    inner = keras.Model(model.inputs, [model.outputs[0], output_layer(model).input], name=f"{model.name}_io")
    pixels = keras.Input(model.input_shape[1:], dtype="uint8", name="pixels")
    if served_flip(model) == "none":
        probabilities, features = inner(pixels)
    else:
        width = model.input_shape[2]
        mirrored = ops.take(pixels, ops.arange(width - 1, -1, -1), axis=2)  # a Gather every runtime has
        probabilities, features = inner(pixels)
        probabilities = (probabilities + inner(mirrored)[0]) * 0.5
    outputs: dict[str, Any] = {PROBABILITIES: probabilities, FEATURES: features}
    return keras.Model(pixels, outputs, name=f"{model.name}_inference")
