"""Where a train step of ``train --arch cnn`` goes on 28x28x1 images: variants of the network timed
with ``train_on_batch`` (median of 12 steps after 3 warm-ups), as milliseconds per step.

Run: .venv/bin/python benchmarks/profile_cnn_step.py [VARIANT ...]   (~3 minutes; one JSON object)
``conv_layers`` times each 3x3 convolution of the step alone (forward, input and weight gradient).
The network is ``nets.cnn``'s (pooling as reshape + max, FastMaxPool2D). The variants swap one
part at a time: stock max-pooling (XLA's reduce_window and select-and-scatter), BatchNorm
statistics as matrix-vector products, no BatchNorm, no augmentation, batch 128. Measured on an AMD
EPYC (2 cores) before FastMaxPool2D was the network's, ms per step: stock pooling 488 (batch 256),
221 (batch 128), no augmentation 491, reshape+max pooling 418, no BatchNorm 473.
"""

import json
import statistics
import sys
import time

import classify_job  # noqa: F401  sets the JAX backend before keras is imported

# isort: split
import jax
import jax.numpy as jnp
import keras
import numpy as np
from common import machine
from keras import layers

from classify_job.nets.cnn import BN_MOMENTUM, space_to_depth, stage_widths
from classify_job.nets.fast_layers import FastMaxPool2D
from classify_job.train.augment import build_augmentation
from classify_job.train.config import AugmentConfig


class FastBN(keras.layers.BatchNormalization):
    def call(self, x, training=None, mask=None):
        if not training:
            return super().call(x, training=False)
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        ones = jnp.full((x2.shape[0],), 1.0 / x2.shape[0], x.dtype)
        mean = ones @ x2
        var = jnp.maximum(ones @ (x2 * x2) - mean * mean, 0.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + var * (1 - self.momentum))
        inv = jax.lax.rsqrt(var + self.epsilon) * self.gamma.value
        return x * inv + (self.beta.value - mean * inv)


def build(pool="fast", bn="stock", bn_on=True, convs=2):
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = space_to_depth(x, 2)
    for stage, width in enumerate(stage_widths(14, 256)):
        if stage:
            x = FastMaxPool2D()(x) if pool == "fast" else layers.MaxPooling2D(2)(x)
        for _ in range(convs):
            x = layers.Conv2D(width, 3, padding="same", use_bias=not bn_on)(x)
            if bn_on:
                x = (FastBN if bn == "fast" else layers.BatchNormalization)(momentum=BN_MOMENTUM)(x)
            x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def step_ms(model, batch, augment=True, steps=12):
    if augment:
        aug = build_augmentation(AugmentConfig("horizontal", 0, 0, 2 / 28, 0, 0), 0)
        inp = keras.Input((28, 28, 1))
        model = keras.Model(inp, model(aug(inp)))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 255, (batch, 28, 28, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, batch)
    for _ in range(3):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 1)


def conv_profile(batch=256, repeats=20):
    """Each of the network's 3x3 convolutions alone, jitted, at its shape in the batch-``batch``
    step: forward, input gradient and weight gradient, ms (median of ``repeats``) and GFLOP/s."""
    rng = np.random.default_rng(0)
    shapes, size, channels = [], 14, 4  # after the 2x2 space-to-depth of 28x28x1
    for stage, width in enumerate(stage_widths(14, 256)):
        size = size // 2 if stage else size
        for _ in range(2):
            shapes.append((size, channels, width))
            channels = width
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)

    def timed(fn, *args):
        jax.block_until_ready(fn(*args))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    rows, total = [], 0.0
    for size, cin, cout in shapes:
        x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) * 0.05, jnp.float32)
        g = jnp.asarray(rng.standard_normal((batch, size, size, cout)), jnp.float32)
        ops = {
            "forward": jax.jit(conv),
            "input_grad": jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
            "weight_grad": jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
        }
        gflop = 2 * batch * size * size * 9 * cin * cout / 1e9
        row = {"shape": f"{size}x{size} {cin}->{cout}", "gflop_each": round(gflop, 2)}
        for name, fn in ops.items():
            seconds = timed(fn, x, w) if name == "forward" else timed(fn, x, w, g)
            total += seconds
            row[name] = {"ms": round(1000 * seconds, 1), "gflop_per_s": round(gflop / seconds, 1)}
        rows.append(row)
    return {"layers": rows, "convolutions_ms": round(1000 * total, 1)}


variants = {
    "conv_layers": conv_profile,
    "as_is_b256": lambda: step_ms(build(), 256),
    "as_is_b128": lambda: step_ms(build(), 128),
    "no_augment_b256": lambda: step_ms(build(), 256, augment=False),
    "stock_pool_b256": lambda: step_ms(build(pool="stock"), 256),
    "fast_bn_b256": lambda: step_ms(build(bn="fast"), 256),
    "no_bn_b256": lambda: step_ms(build(bn_on=False), 256),
}
if __name__ == "__main__":
    chosen = sys.argv[1:] or list(variants)
    print(
        json.dumps(
            {"machine": machine(), "ms_per_step": {name: variants[name]() for name in chosen}}, indent=2
        )
    )
