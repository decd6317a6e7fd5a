"""The fast layers compute what the stock Keras layers compute, forward and backward, and survive
a safe-mode save/load; the EfficientNet-Lite0 built from them equals the stock-layer build."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import classify_job  # noqa: F401  forces the JAX backend before keras builds anything
from classify_job.bundle import BundleSpec, load_bundle, save_bundle
from classify_job.nets.efficientnet_lite import build_backbone, build_classifier
from classify_job.nets.fast_layers import (
    FastDepthwiseConv2D,
    FastMaxPool2D,
    FastPointwiseConv2D,
    same_padding,
)

ATOL = 1e-5


def _pair_up(stock, fast, shape, seed=0):
    """Build both layers on ``shape`` and give them the same random weights (bias included)."""
    rng = np.random.default_rng(seed)
    stock.build(shape)
    fast.build(shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in stock.weights]
    stock.set_weights(weights)
    fast.set_weights(weights)
    return rng.normal(size=shape).astype("float32")


def _output_and_grads(layer, x, cotangent):
    """Output, d(sum(out * cotangent))/d(input) and /d(each trainable weight)."""

    def loss(weights, inputs):
        out, _ = layer.stateless_call(weights, [], inputs)
        return jnp.sum(out * cotangent), out

    weights = [v.value for v in layer.trainable_variables]
    (grad_w, grad_x), out = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(weights, x)
    return [out, grad_x, *grad_w]


def _assert_same(stock, fast, x):
    out_shape = stock.compute_output_shape(x.shape)
    cotangent = np.random.default_rng(1).normal(size=out_shape).astype("float32")
    expected = _output_and_grads(stock, x, cotangent)
    received = _output_and_grads(fast, x, cotangent)
    assert fast.compute_output_shape(x.shape) == out_shape
    for want, got in zip(expected, received, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(7, 9), (8, 6)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_depthwise_matches_stock_forward_and_gradients(kernel, stride, size, padding):
    stock = keras.layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=True)
    fast = FastDepthwiseConv2D(kernel, stride, padding=padding, use_bias=True)
    x = _pair_up(stock, fast, (2, *size, 3))
    _assert_same(stock, fast, x)


@pytest.mark.parametrize("use_bias", [False, True])
def test_pointwise_matches_stock_forward_and_gradients(use_bias):
    stock = keras.layers.Conv2D(5, 1, use_bias=use_bias)
    fast = FastPointwiseConv2D(5, use_bias=use_bias)
    x = _pair_up(stock, fast, (2, 7, 6, 4))
    _assert_same(stock, fast, x)


@pytest.mark.parametrize("size", [(7, 9), (8, 6), (3, 3)])
def test_maxpool_matches_stock_forward_and_gradients(size):
    x = np.random.default_rng(3).normal(size=(2, *size, 3)).astype("float32")  # no ties
    stock, fast = keras.layers.MaxPooling2D(2), FastMaxPool2D()
    _pair_up(stock, fast, x.shape)  # builds both: no weights to share
    _assert_same(stock, fast, x)


def test_weights_have_stock_shapes_and_names():
    depthwise = FastDepthwiseConv2D(5, use_bias=True)
    depthwise.build((None, 8, 8, 6))
    pointwise = FastPointwiseConv2D(7)
    pointwise.build((None, 8, 8, 6))
    assert [(w.name, w.shape) for w in depthwise.weights] == [("kernel", (5, 5, 6, 1)), ("bias", (6,))]
    assert [(w.name, w.shape) for w in pointwise.weights] == [("kernel", (1, 1, 6, 7))]


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(8, 5, 1) == (2, 2)


def test_invalid_arguments_are_echoed():
    with pytest.raises(ValueError, match="padding='causal'"):
        FastDepthwiseConv2D(3, padding="causal")
    with pytest.raises(ValueError, match="filters=0"):
        FastPointwiseConv2D(0)


def test_model_round_trips_through_keras_file_in_safe_mode(tmp_path):
    inputs = keras.Input((9, 9, 4))
    x = FastDepthwiseConv2D(3, 2, use_bias=True, name="dw")(inputs)
    x = FastMaxPool2D(name="pool")(x)
    outputs = FastPointwiseConv2D(5, use_bias=True, kernel_initializer="he_normal", name="pw")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)

    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)

    x = np.random.default_rng(0).normal(size=(2, 9, 9, 4)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    for name in ("dw", "pool", "pw"):
        assert type(loaded.get_layer(name)) is type(model.get_layer(name))
        assert loaded.get_layer(name).get_config() == model.get_layer(name).get_config()


def _random_backbone_weights(model, rng):
    """He-normal kernels and non-trivial BatchNorm parameters and statistics, made with NumPy."""
    weights = []
    for weight in model.weights:
        name, shape = weight.path.rsplit("/", 1)[-1], weight.shape
        if name == "kernel":
            fan_in = shape[0] * shape[1] * (shape[2] if shape[3] > 1 else 1)  # depthwise: (kh, kw, C, 1)
            weights.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
        elif name in ("gamma", "moving_variance"):
            weights.append(rng.uniform(0.5, 1.5, shape))
        else:
            weights.append(rng.normal(0.0, 0.1, shape))
    return [w.astype("float32") for w in weights]


def test_fast_backbone_equals_stock_backbone_with_the_same_weights():
    rng = np.random.default_rng(0)
    fast = build_backbone(64, fast=True, random_init=False)
    stock = build_backbone(64, fast=False, random_init=False)
    assert [(w.path, w.shape) for w in fast.weights] == [(w.path, w.shape) for w in stock.weights]
    weights = _random_backbone_weights(fast, rng)
    fast.set_weights(weights)
    stock.set_weights(weights)
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    want, got = stock.predict(x, verbose=0), fast.predict(x, verbose=0)
    assert want.shape == (2, 1280) and want.std() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_lite0_classifier_survives_a_bundle_round_trip(tmp_path):
    model = build_classifier(build_backbone(32, random_init=False), num_classes=2)
    spec = BundleSpec(labels=("cat", "dog"), image_size=(32, 32), color_mode="rgb", architecture="lite0")
    save_bundle(tmp_path, model, spec)

    loaded = load_bundle(tmp_path).model

    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    backbone = loaded.get_layer("efficientnet_lite0")
    assert isinstance(backbone.get_layer("block1_dwconv"), FastDepthwiseConv2D)
    assert isinstance(backbone.get_layer("head_conv"), FastPointwiseConv2D)
