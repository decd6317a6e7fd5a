"""A stack of softmax heads on a classifier's features, averaged: an ensemble for a few dense layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="classify_job")
class HeadEnsemble(keras.layers.Layer):
    """``[features, probs] -> probs``: the weighted mean of the classifier's own probabilities
    (``probs``) and ``members`` more softmax heads on the same ``features``.

    The weights (``mix``, the own head first) start as ``[1, 0, ...]``, so the layer is the
    identity, exactly, until :meth:`set_members` gives it heads; training never changes them.
    """

    def __init__(self, members: int, classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if members < 1 or classes < 2:
            raise ValueError(f"need members >= 1 and classes >= 2. Received: {members=}, {classes=}")
        self.members = members
        self.classes = classes

    def build(self, input_shape: Any) -> None:
        features = input_shape[0][-1]
        shape = (self.members, features, self.classes)
        self.kernel = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="kernel")
        self.bias = self.add_weight(
            shape=(self.members, self.classes), initializer="zeros", trainable=False, name="bias"
        )
        first = keras.initializers.Constant([1.0] + [0.0] * self.members)
        self.mix = self.add_weight(shape=(self.members + 1,), initializer=first, trainable=False, name="mix")

    def call(self, inputs: Any) -> Any:
        features, probs = inputs
        total = self.mix[0] * probs
        for k in range(self.members):  # one small product each: no reshape of the batch dimension
            member = ops.softmax(ops.matmul(features, self.kernel[k]) + self.bias[k], axis=-1)
            total = total + self.mix[k + 1] * member
        return total / ops.sum(self.mix)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[1]

    def set_members(self, heads: Sequence[tuple[np.ndarray, np.ndarray]], own: float = 0.0) -> None:
        """Serve the mean of ``heads`` (each a Dense softmax's kernel and bias), with the own head
        weighted ``own`` against 1 for each of them."""
        if len(heads) != self.members:
            raise ValueError(f"expected {self.members} heads. Received: {len(heads)}")
        self.kernel.assign(np.stack([kernel for kernel, _ in heads]))
        self.bias.assign(np.stack([bias for _, bias in heads]))
        self.mix.assign(np.array([own] + [1.0] * self.members, np.float32))

    @property
    def serving_members(self) -> bool:
        return bool(np.asarray(self.mix)[1:].any())

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "members": self.members, "classes": self.classes}
