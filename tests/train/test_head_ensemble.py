"""The out-of-fold heads kept and served as a mean: the layer is the identity until given heads,
then their mean in every runtime and after saving; the held-out predictions calibration fits on
come from heads that never saw the image; a trained Lite0 bundle records and serves it, with the
test-time flip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from classify_job.bundle import load_bundle
from classify_job.nets.efficientnet_lite import FEATURES, head_layers
from classify_job.nets.head_ensemble import HeadEnsemble
from classify_job.nets.inference import inference_model, served_flip
from classify_job.train import lite0_heads
from classify_job.train.config import AugmentConfig, TrainConfig
from classify_job.train.dataset import DatasetIndex, LoadedSplit, TrainingData
from classify_job.train.state import TrainRun

CLASSES = 3


def features_net() -> keras.Model:
    """A classifier from cached features (no backbone): the head layers, then the ensemble layer."""
    inputs = keras.Input((FEATURES,), name="features_in")
    x = inputs
    for layer in head_layers(CLASSES, 0.0):
        x = layer(x)
    return lite0_heads.with_fold_heads(keras.Model(inputs, x, name="net"))


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy clusters in feature space."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    centres = rng.normal(0, 1, (CLASSES, FEATURES)).astype("float32")
    return centres[labels] + rng.normal(0, 2.0, (n, FEATURES)).astype("float32"), labels


def features_run(tmp_path: Path, labels_train: np.ndarray | None = None) -> TrainRun:
    x, y = blobs(60, 0)
    val_x, val_y = blobs(12, 1)
    y = y if labels_train is None else labels_train
    index = DatasetIndex(tmp_path, tuple("abc"), {"train": (), "val": (), "test": ()}, "folders")
    data = TrainingData(
        index, LoadedSplit(x, y, ()), LoadedSplit(val_x, val_y, ()), LoadedSplit(x[:0], y[:0], ())
    )
    config = TrainConfig(
        tmp_path, tmp_path / "out", epochs=3, batch_size=16, augment=AugmentConfig("none", 0, 0, 0, 0, 0)
    )
    return TrainRun(config, data)


def test_the_layer_is_the_identity_until_given_heads_then_their_mean(tmp_path):
    net = features_net()
    x, _ = blobs(5, 2)
    own = keras.Model(net.inputs, net.get_layer("predictions").output)
    np.testing.assert_array_equal(net.predict_on_batch(x), own.predict_on_batch(x))
    rng = np.random.default_rng(3)
    heads = [
        (
            rng.normal(0, 0.1, (FEATURES, CLASSES)).astype("float32"),
            rng.normal(0, 1, CLASSES).astype("float32"),
        )
        for _ in range(lite0_heads.FOLDS)
    ]
    ensemble = net.get_layer(lite0_heads.ENSEMBLE)
    ensemble.set_members(heads)
    expected = np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(x @ k + b)) for k, b in heads], axis=0)
    np.testing.assert_allclose(net.predict_on_batch(x), expected, atol=1e-6)
    assert ensemble.serving_members
    net.save(tmp_path / "net.keras")
    loaded = keras.saving.load_model(
        tmp_path / "net.keras", safe_mode=True
    )  # registered by classify_job.nets
    np.testing.assert_allclose(loaded.predict_on_batch(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="expected 5 heads"):
        ensemble.set_members(heads[:2])


def test_each_training_image_is_predicted_by_heads_that_never_saw_it(tmp_path):
    """Relabelling image 0 moves no held-out prediction of image 0: every head averaged into it
    was trained without it. The validation split goes through the served mean."""

    def held_out(labels=None):
        keras.utils.set_random_seed(0)
        net = features_net()
        run = features_run(tmp_path, labels)
        return net, run, lite0_heads.out_of_fold(net, run, 60, lite0_heads.Head(0.0, 0, 10.0))

    net, run, found = held_out()
    assert found.source.startswith("cross-fitted") and len(found) == 72
    val = run.data.val.images
    np.testing.assert_allclose(found.probs[60:], net.predict_on_batch(val), atol=1e-5)  # the served mean
    relabelled = run.data.train.labels.copy()
    relabelled[0] = (relabelled[0] + 1) % CLASSES
    _, _, again = held_out(relabelled)
    np.testing.assert_allclose(again.probs[0], found.probs[0], atol=1e-6)
    assert not np.allclose(again.probs[60:], found.probs[60:], atol=1e-6)  # the served heads did see it


def test_without_the_layer_the_held_out_predictions_are_single_heads(tmp_path):
    inputs = keras.Input((FEATURES,))
    x = inputs
    for layer in head_layers(CLASSES, 0.0):
        x = layer(x)
    net = keras.Model(inputs, x)
    found = lite0_heads.out_of_fold(net, features_run(tmp_path), 60, lite0_heads.Head(0.0, 0, 10.0))
    assert found.source.startswith("5-fold out-of-fold") and lite0_heads.served_heads(net)["members"] == 1


@pytest.fixture
def _use_cache(lite0_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFY_JOB_CACHE", str(lite0_weights))


@pytest.mark.slow  # ~45 s: a Lite0 training with its exports
@pytest.mark.usefixtures("_use_cache")
def test_a_lite0_bundle_serves_the_mean_of_its_fold_heads_with_the_flip_in_every_runtime(tiny_tree, tmp_path):
    from classify_job.classify.backends import load_graph
    from classify_job.train.pipeline import train

    data = tiny_tree(per_class=8)
    config = TrainConfig(
        data, tmp_path / "m", arch="efficientnet_lite0", epochs=3, batch_size=8, image_size=(32, 32),
        val_split=0.25, test_split=0.25, augment=AugmentConfig("none", 0, 0, 0, 0, 0), int8=False,
        arch_options={"tta": "flip"},
    )  # fmt: skip
    result = train(config)
    spec = result.spec
    assert spec.extra["tta"] == {"flip": "horizontal"} and spec.extra["heads"]["members"] == lite0_heads.FOLDS
    assert spec.calibration["fitted_on"].startswith("cross-fitted")
    model = load_bundle(result.bundle_dir).model
    assert served_flip(model) == "horizontal" and model.get_layer(lite0_heads.ENSEMBLE).serving_members
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    expected = inference_model(model).predict_on_batch(x)
    for entry in spec.exports:
        probs, features = load_graph(result.bundle_dir / entry["file"], entry["format"], threads=1).predict(x)
        np.testing.assert_allclose(probs, expected["probabilities"], atol=1e-4, err_msg=entry["format"])
        np.testing.assert_allclose(features, expected["features"], atol=1e-3, err_msg=entry["format"])
    assert {e["format"] for e in spec.exports} == {"onnx", "openvino"}


def test_tta_and_fold_heads_can_be_switched_off():
    from classify_job.train.finetune import FinetuneOptions, build_pretrained_classifier

    options = FinetuneOptions.from_dict({"fold_heads": False})
    assert options.tta == "none"  # the default: the flip measured +0.7 points at 1.9x the model time
    net = build_pretrained_classifier(CLASSES, (32, 32), 3, options)
    assert served_flip(net) == "none" and not any(isinstance(layer, HeadEnsemble) for layer in net.layers)
    flipped = build_pretrained_classifier(CLASSES, (32, 32), 3, dataclasses.replace(options, tta="flip"))
    assert served_flip(flipped) == "horizontal"
    with pytest.raises(Exception, match="tta"):
        FinetuneOptions.from_dict({"tta": "mirror"})
