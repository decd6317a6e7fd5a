"""Flip test-time augmentation in the served graph: the probabilities are the mean over the image
and its mirror, the features the image's own, alike in Keras, ONNX Runtime and OpenVINO, and
through saving; a model without the layer is served as before."""

from pathlib import Path

import keras
import numpy as np
import pytest

from classify_job.bundle import BundleSpec, load_bundle, save_bundle
from classify_job.nets.inference import FlipTTA, inference_model, served_flip, with_flip_tta

V1 = Path(__file__).parents[1] / "fixtures" / "v1"


def tiny_classifier() -> keras.Model:
    """Pixels -> conv -> pooled features -> softmax, deliberately not left-right symmetric."""
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)  # keeps position, so a mirror gives other features
    x = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="tiny")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def pixels(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_flip_averages_probabilities_over_the_mirror_and_keeps_the_image_features():
    plain = tiny_classifier()
    flipped = with_flip_tta(plain)
    x = pixels()
    base = inference_model(plain)
    here, mirror = base.predict_on_batch(x), base.predict_on_batch(x[:, :, ::-1])
    got = inference_model(flipped).predict_on_batch(x)
    assert not np.allclose(here["probabilities"], mirror["probabilities"], atol=1e-3)  # the flip matters
    np.testing.assert_allclose(
        got["probabilities"], (here["probabilities"] + mirror["probabilities"]) / 2, atol=1e-6
    )
    np.testing.assert_allclose(got["features"], here["features"], atol=1e-6)
    assert served_flip(flipped) == "horizontal" and served_flip(plain) == "none"
    np.testing.assert_array_equal(
        flipped.predict_on_batch(x), plain.predict_on_batch(x)
    )  # identity in training


def test_a_model_without_the_layer_serves_as_before():
    model = load_bundle(V1 / "cnn_bundle").model
    assert served_flip(model) == "none"
    x = np.random.default_rng(2).integers(0, 256, (3, *model.input_shape[1:]), dtype=np.uint8)
    got = inference_model(model).predict_on_batch(x)
    np.testing.assert_allclose(got["probabilities"], model.predict_on_batch(x.astype("float32")), atol=1e-6)


def test_the_flip_survives_saving_and_every_runtime_agrees(tmp_path):
    from classify_job.classify.backends import load_graph
    from classify_job.nets.graphs import export_onnx, export_openvino

    model = with_flip_tta(tiny_classifier())
    save_bundle(tmp_path / "b", model, BundleSpec(("a", "b", "c"), (8, 8), "rgb", "cnn"))
    loaded = load_bundle(tmp_path / "b").model
    assert served_flip(loaded) == "horizontal"
    x = pixels(7)
    expected = inference_model(model).predict_on_batch(x)
    np.testing.assert_allclose(
        inference_model(loaded).predict_on_batch(x)["probabilities"], expected["probabilities"]
    )
    export_onnx(loaded, tmp_path / "model.onnx")
    export_openvino(tmp_path / "model.onnx", tmp_path / "ov" / "model.xml")
    for path, runtime in ((tmp_path / "model.onnx", "onnx"), (tmp_path / "ov" / "model.xml", "openvino")):
        probs, features = load_graph(path, runtime, threads=1).predict(x)
        np.testing.assert_allclose(probs, expected["probabilities"], atol=1e-5, err_msg=runtime)
        np.testing.assert_allclose(features, expected["features"], atol=1e-4, err_msg=runtime)


def test_an_unknown_flip_is_refused():
    with pytest.raises(ValueError, match="flip='vertical'"):
        FlipTTA("vertical")
