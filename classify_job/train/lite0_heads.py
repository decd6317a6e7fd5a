"""Classifier heads on cached backbone features: the head of a whole classifier trained alone,
fresh heads for out-of-fold predictions, and the rates they train at."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np

from classify_job.decisions.calibration import HeldOut
from classify_job.nets.efficientnet_lite import FEATURES, head_layers
from classify_job.train.config import AugmentConfig
from classify_job.train.dataset import LoadedSplit
from classify_job.train.state import TrainRun, fit_run

NO_AUGMENT = AugmentConfig("none", 0.0, 0.0, 0.0, 0.0, 0.0)
FOLDS = 5
HEAD_LAYERS = ("head_dropout", "head_hidden", "predictions")


@dataclass(frozen=True)
class Head:
    """A head's shape and rate: its dropout, the width of its hidden layer (0: none) and its
    learning rate as a multiple of the run's."""

    dropout: float
    width: int
    lr_factor: float


def head_model(net: keras.Model) -> keras.Model:
    """Features -> probabilities through the classifier's head layers (shared, not copied)."""
    x = inputs = keras.Input((FEATURES,), name="features")
    names = {layer.name for layer in net.layers}
    for name in (n for n in HEAD_LAYERS if n in names):
        x = net.get_layer(name)(x)
    return keras.Model(inputs, x, name="head")


def penultimate(net: keras.Model, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """What the classifier's softmax sees for these cached backbone features: the features
    themselves, or its ``head_hidden`` layer's activations (the unfamiliar score's input)."""
    if "head_hidden" not in {layer.name for layer in net.layers}:
        return features
    hidden = net.get_layer("head_hidden")
    return (
        np.concatenate([np.asarray(hidden(features[i : i + batch])) for i in range(0, len(features), batch)])
        if len(features)
        else np.zeros((0, hidden.units), np.float32)
    )


def fresh_head(classes: int, dropout: float, width: int = 0) -> keras.Model:
    """A new head like the classifier's, on its own."""
    return keras.Sequential([keras.Input((FEATURES,)), *head_layers(classes, dropout, width)])


def fit_head(net: keras.Model, features: TrainRun, lr_factor: float) -> list[dict[str, float]]:
    """Train the classifier's own head layers on the cached features that are ``features.data``,
    with :func:`~classify_job.train.fit.fit`'s optimizer, early stopping and rate reduction;
    augmentation already lives in the cached views."""
    return fit_head_model(head_model(net), features, lr_factor)


def fit_head_model(head: keras.Model, features: TrainRun, lr_factor: float) -> list[dict[str, float]]:
    """Fit a head (features -> probabilities) at ``lr_factor`` times the rate, without augmentation."""
    config = features.config
    head_config = dataclasses.replace(
        config, augment=NO_AUGMENT, learning_rate=config.learning_rate * lr_factor
    )
    return fit_run(head, dataclasses.replace(features, config=head_config))


def out_of_fold(net: keras.Model, features: TrainRun, clean: int, head: Head) -> HeldOut | None:
    """Predictions for the first ``clean`` training images of ``features.data`` (the unaugmented
    view) from a head that never saw them, plus the validation split through the trained head:
    calibration data on the model's own features."""
    data = features.data
    x, y = data.train.images[:clean], data.train.labels[:clean]
    if len(y) < 2 * FOLDS:
        return None
    fold = np.random.default_rng(features.config.seed).permutation(len(y)) % FOLDS
    probs = np.zeros((len(y), net.output_shape[-1]), np.float32)
    quiet = dataclasses.replace(features, on_epoch=None, callbacks=())  # the folds report no progress
    for k in range(FOLDS):
        model = fresh_head(net.output_shape[-1], head.dropout, head.width)
        part = dataclasses.replace(data, train=LoadedSplit(x[fold != k], y[fold != k], ()))
        fit_head_model(model, dataclasses.replace(quiet, data=part), head.lr_factor)
        probs[fold == k] = np.asarray(model.predict(x[fold == k], batch_size=256, verbose=0))
    source = f"{FOLDS}-fold out-of-fold predictions on cached training features"
    sources = [HeldOut(probs, y, penultimate(net, x), source)]
    if len(data.val):
        val = data.val.images
        val_probs = np.asarray(head_model(net).predict(val, batch_size=256, verbose=0))
        sources.append(HeldOut(val_probs, data.val.labels, penultimate(net, val), "the validation split"))
    return HeldOut(
        np.concatenate([s.probs for s in sources]),
        np.concatenate([s.labels for s in sources]),
        np.concatenate([s.features for s in sources]),
        " and ".join(s.source for s in sources),
    )
