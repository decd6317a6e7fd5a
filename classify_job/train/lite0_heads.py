"""Classifier heads on cached backbone features: the head of a whole classifier trained alone,
fresh heads for out-of-fold predictions (kept and served as a mean when the classifier ends in a
:class:`~classify_job.nets.head_ensemble.HeadEnsemble`), and the rates they train at."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from classify_job.decisions.calibration import HeldOut
from classify_job.nets.efficientnet_lite import FEATURES, head_layers
from classify_job.nets.head_ensemble import HeadEnsemble
from classify_job.train.config import AugmentConfig
from classify_job.train.dataset import LoadedSplit, TrainingData
from classify_job.train.state import TrainRun, fit_run

NO_AUGMENT = AugmentConfig("none", 0.0, 0.0, 0.0, 0.0, 0.0)
FOLDS = 5
HEAD_LAYERS = ("head_dropout", "head_hidden", "predictions")
ENSEMBLE = "fold_heads"
CROSS_FITTED = (
    f"cross-fitted predictions of the {FOLDS}-head mean (each image's: the mean of the {FOLDS - 1} heads "
    "trained without its fold and one other) on cached training features"
)


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


def with_fold_heads(net: keras.Model) -> keras.Model:
    """``net`` (its layers shared) ending in a :class:`HeadEnsemble` of ``FOLDS`` heads on the
    features its softmax sees: the identity until :func:`out_of_fold` fits them."""
    features = net.get_layer("predictions").input
    ensemble = HeadEnsemble(FOLDS, net.output_shape[-1], name=ENSEMBLE)
    return keras.Model(net.inputs, ensemble([features, net.outputs[0]]), name=net.name)


def out_of_fold(
    net: keras.Model, features: TrainRun, clean: int, head: Head, mirrored: TrainingData | None = None
) -> HeldOut | None:
    """Held-out predictions for the first ``clean`` training images of ``features.data`` (the
    unaugmented view) and for the validation split: calibration data on the model's own features.

    ``FOLDS`` heads are trained, each without one fold. Without an ensemble layer, each image's
    prediction is its fold's head's and the validation split goes through the trained head. With
    one (:func:`with_fold_heads`), the model serves the mean of the ``FOLDS`` heads; no training
    image is held out from that mean, so each gets the mean of ``FOLDS - 1`` heads trained without
    its fold and one other (cross-fitting: every fold pair's head, ``FOLDS * (FOLDS - 1) / 2`` more
    fits on cached features), and the validation split, which no head trained on, goes through the
    mean itself. With ``mirrored`` (the features of the same images' mirrors) every prediction is
    the mean over the image and its mirror, as the served graph's.
    """
    data = features.data
    x, y = data.train.images[:clean], data.train.labels[:clean]
    if len(y) < 2 * FOLDS:
        return None
    fold = np.random.default_rng(features.config.seed).permutation(len(y)) % FOLDS
    quiet = dataclasses.replace(features, on_epoch=None, callbacks=())  # the folds report no progress
    mx = mirrored.train.images if mirrored is not None else None

    def without(folds: frozenset[int]) -> keras.Model:
        model = fresh_head(net.output_shape[-1], head.dropout, head.width)
        keep = ~np.isin(fold, list(folds))
        part = dataclasses.replace(data, train=LoadedSplit(x[keep], y[keep], ()))
        fit_head_model(model, dataclasses.replace(quiet, data=part), head.lr_factor)
        return model

    heads = [without(frozenset({k})) for k in range(FOLDS)]
    ensemble = _ensemble(net)
    if ensemble is None:
        probs = np.zeros((len(y), net.output_shape[-1]), np.float32)
        for k in range(FOLDS):
            probs[fold == k] = _predict(heads[k], x, mx, fold == k)
        source, served = (
            f"{FOLDS}-fold out-of-fold predictions on cached training features",
            [head_model(net)],
        )
    else:
        ensemble.set_members([_dense_weights(h) for h in heads])
        probs = _cross_fitted(without, x, mx, fold)
        source, served = CROSS_FITTED, heads
    sources = [HeldOut(probs, y, penultimate(net, x), source)]
    if len(data.val):
        val, mval = data.val.images, mirrored.val.images if mirrored is not None else None
        val_probs = np.mean([_predict(model, val, mval) for model in served], axis=0)
        sources.append(HeldOut(val_probs, data.val.labels, penultimate(net, val), "the validation split"))
    return HeldOut(
        np.concatenate([s.probs for s in sources]),
        np.concatenate([s.labels for s in sources]),
        np.concatenate([s.features for s in sources]),
        " and ".join(s.source for s in sources),
    )


def _cross_fitted(without: Any, x: np.ndarray, mirrored: np.ndarray | None, fold: np.ndarray) -> np.ndarray:
    """Each image's mean prediction over the heads trained without its fold and one other."""
    pairs: dict[frozenset[int], keras.Model] = {}
    probs = None
    for j in range(FOLDS):
        rows = fold == j
        members = []
        for m in (m for m in range(FOLDS) if m != j):
            key = frozenset({j, m})
            if key not in pairs:
                pairs[key] = without(key)
            members.append(_predict(pairs[key], x, mirrored, rows))
        mean = np.mean(members, axis=0)
        probs = np.zeros((len(x), mean.shape[1]), np.float32) if probs is None else probs
        probs[rows] = mean
    return probs


def served_heads(net: keras.Model) -> dict[str, Any]:
    """bundle.json's ``heads``: what gives the served probabilities."""
    ensemble = _ensemble(net)
    if ensemble is not None and ensemble.serving_members:
        return {"served": f"mean of {FOLDS} out-of-fold heads", "members": FOLDS}
    return {"served": "one head trained on every training image", "members": 1}


def _ensemble(net: keras.Model) -> HeadEnsemble | None:
    found = [layer for layer in net.layers if isinstance(layer, HeadEnsemble)]
    return found[0] if found else None


def _dense_weights(head: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    kernel, bias = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)][-1].get_weights()
    return kernel, bias


def _predict(
    head: keras.Model, x: np.ndarray, mirrored: np.ndarray | None, rows: Any = slice(None)
) -> np.ndarray:
    """``head``'s probabilities for features ``x[rows]``, averaged with the mirrors' when given."""
    probs = np.asarray(head.predict(x[rows], batch_size=256, verbose=0))
    if mirrored is None:
        return probs
    return (probs + np.asarray(head.predict(mirrored[rows], batch_size=256, verbose=0))) / 2
