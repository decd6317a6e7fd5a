"""The inference form of a classifier: uint8 pixels in; probabilities and penultimate features out.

Every runtime serves this form, so the ``unfamiliar`` score, which needs the features, works on
all of them, and feeding it costs no cast or copy outside the graph.
"""

from __future__ import annotations

from typing import Any

import keras

PROBABILITIES = "probabilities"
FEATURES = "features"


def output_layer(model: keras.Model) -> keras.layers.Layer:
    """The classifier's last Dense layer, whose input is the penultimate feature vector."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(f"model {model.name!r} has no Dense output layer")
    return dense[-1]


def inference_model(model: keras.Model) -> keras.Model:
    """``model`` with a uint8 input and two named outputs: probabilities and features."""
    inner = keras.Model(model.inputs, [model.outputs[0], output_layer(model).input], name=f"{model.name}_io")
    pixels = keras.Input(model.input_shape[1:], dtype="uint8", name="pixels")
    probabilities, features = inner(pixels)
    outputs: dict[str, Any] = {PROBABILITIES: probabilities, FEATURES: features}
    return keras.Model(pixels, outputs, name=f"{model.name}_inference")
