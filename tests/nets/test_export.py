"""The serving form of a model: stock layers, BatchNorm folded, uint8 in, two outputs; and its
ONNX / OpenVINO files, equal to the Keras model."""

from pathlib import Path

import keras
import numpy as np
import pytest

from classify_job.bundle import load_bundle
from classify_job.nets.cnn import cnn
from classify_job.nets.fast_layers import FastDepthwiseConv2D, FastMaxPool2D, FastPointwiseConv2D
from classify_job.nets.graphs import export_onnx, export_openvino, serving_model
from classify_job.nets.inference import inference_model

V1 = Path(__file__).parents[1] / "fixtures" / "v1"


MODELS = ["lite_bundle", "cnn_bundle", "fresh_cnn"]


def model_for(name):
    """A bundle written by version 1, or today's CNN: fast pooling and the test-time flip."""
    if name == "fresh_cnn":
        return cnn(3, (28, 28), 1, top_width=64, tta="flip")
    return load_bundle(V1 / name).model


def pixels(model, n=6):
    return np.random.default_rng(0).integers(0, 256, (n, *model.input_shape[1:]), dtype=np.uint8)


def flat_layers(model):
    for layer in model.layers:
        yield from flat_layers(layer) if isinstance(layer, keras.Model) else [layer]


@pytest.mark.parametrize("name", MODELS)
def test_serving_model_computes_the_same_function_with_stock_layers(name):
    model = model_for(name)
    serving = serving_model(model)
    kinds = {type(layer) for layer in flat_layers(serving)}
    assert not kinds & {FastDepthwiseConv2D, FastPointwiseConv2D, FastMaxPool2D}
    x = pixels(model)
    expected = inference_model(model).predict_on_batch(x)
    got = serving.predict_on_batch(x)
    assert serving.inputs[0].dtype == "uint8"
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-5)
    np.testing.assert_allclose(got["features"], expected["features"], atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_and_openvino_files_match_keras(name, tmp_path):
    import onnx

    from classify_job.classify.backends import load_graph

    model = model_for(name)
    info = export_onnx(model, tmp_path / "model.onnx")
    ops = [node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node]
    assert "Max" not in ops and "Min" not in ops  # ReLU6 became Clip
    assert "Sqrt" not in ops and "Div" not in ops  # BatchNorm folded into the convolutions
    if name == "lite_bundle":
        assert info["relu6_clips"] > 0 and "Clip" in ops
    else:
        assert info["pools_2d"] > 0  # max pooling rewritten to a 2-d MaxPool
    export_openvino(tmp_path / "model.onnx", tmp_path / "ov" / "model.xml")
    x = pixels(model, n=5)  # not the batch size of any compilation: the graphs take any batch
    expected = inference_model(model).predict_on_batch(x)
    for path, runtime in ((tmp_path / "model.onnx", "onnx"), (tmp_path / "ov" / "model.xml", "openvino")):
        probs, features = load_graph(path, runtime, threads=1).predict(x)
        np.testing.assert_allclose(probs, expected["probabilities"], atol=1e-4)
        np.testing.assert_allclose(features, expected["features"], atol=1e-4)
