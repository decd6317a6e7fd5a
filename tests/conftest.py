"""Shared fixtures: tiny image trees and tiny real Keras bundles, all under tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import COLORS, write_image

import classify_job  # noqa: F401  sets the JAX backend before keras is imported


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_tree(per_class=4)`` makes ``<root>/<class>/<i>.png|jpg`` for three colour classes."""

    def make(per_class: int = 4, root: Path | None = None) -> Path:
        root = root or tmp_path / "tree"
        for name, color in COLORS.items():
            for i in range(per_class):
                write_image(root / name / f"{name}_{i}.{'png' if i % 2 else 'jpg'}", color)
        return root

    return make


@pytest.fixture(scope="session")
def color_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, tiny Keras bundle that labels images by their mean colour (red/green/blue)."""
    import keras

    from classify_job.bundle import BundleSpec, save_bundle

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.eye(3, dtype="float32") * 20, np.zeros(3, dtype="float32")])
    directory = tmp_path_factory.mktemp("bundle") / "color"
    spec = BundleSpec(
        labels=("red", "green", "blue"), image_size=(16, 16), color_mode="rgb", architecture="color-test"
    )
    save_bundle(directory, model, spec)
    return directory


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the ImageNet EfficientNet-Lite0 weights, converted once per session."""
    from classify_job.nets import pretrained

    return pretrained.import_pretrained(tmp_path_factory.mktemp("lite0-weights")).parent
