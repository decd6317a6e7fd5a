"""Training-time augmentation: random transforms inside the jitted training graph, not in the saved model."""

from __future__ import annotations

from typing import Any

import keras

from classify_job.train.config import AugmentConfig


def build_augmentation(config: AugmentConfig, seed: int) -> keras.Sequential | None:
    """Random transforms for the training graph only (identity at inference); None when off.

    They run inside the jitted train step, so they cost no Python time per batch, and the saved
    model never contains them. Rotation and zoom each resample the image (bilinear, the costly
    ones on CPU); translation is an exact whole-pixel shift (:class:`RandomShift`), nearly free.
    """
    if not config.enabled:
        return None
    layers = []
    if config.flip != "none":
        layers.append(keras.layers.RandomFlip(config.flip, seed=seed))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="nearest", seed=seed + 1))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="nearest", seed=seed + 2))
    if config.translate:
        layers.append(RandomShift(config.translate, seed=seed + 3))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 4))
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed + 5))
    for layer in layers:
        # Keras marks its affine layers unjittable for TensorFlow's sake, which silently turns the
        # whole train step eager (~5x slower). On JAX they trace fine.
        layer.supports_jit = True
    return keras.Sequential(layers, name="augmentation")


class RandomShift(keras.layers.Layer):
    """Shift each training image by whole pixels, up to ``factor`` of its size, filling with zeros.

    Implemented as two batched products with one-hot shift matrices: exact, jittable, and far
    cheaper on CPU than a bilinear affine resample. Identity at inference.
    """

    def __init__(self, factor: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool = False) -> Any:
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        batch = keras.ops.shape(images)[0]
        rows = self._shift_matrices(batch, height)
        cols = self._shift_matrices(batch, width)
        images = keras.ops.einsum("bij,bjwc->biwc", rows, keras.ops.cast(images, "float32"))
        return keras.ops.einsum("bkw,bhwc->bhkc", cols, images)

    def _shift_matrices(self, batch: int, size: int) -> Any:
        """(batch, size, size) one-hot matrices: row i picks pixel i - shift (none when out of range)."""
        limit = round(self.factor * size)
        shifts = keras.random.randint((batch, 1, 1), -limit, limit + 1, seed=self.seed_generator)
        index = keras.ops.arange(size)
        return keras.ops.cast(keras.ops.equal(index[None, None, :] + shifts, index[None, :, None]), "float32")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}
