"""The networks ``train --arch`` can build, each with its training recipe and input facts.

Add a network in one entry: a builder ``(num_classes, image_size, channels, **arch_options)``
returning a Keras model from float32 pixels 0..255 to probabilities, and a recipe with
:func:`~classify_job.train.fit.fit`'s signature returning a :class:`~classify_job.train.fit.Fitted`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from classify_job.errors import InputError
from classify_job.imageio import COLOR_MODES, channels_for
from classify_job.nets.cnn import build_cnn
from classify_job.train.config import TrainConfig
from classify_job.train.finetune import build_pretrained_classifier, fit_pretrained
from classify_job.train.fit import Fitted, fit


def fit_plain(*args: Any, **kwargs: Any) -> Fitted:
    """:func:`fit` as a recipe: the history, no facts of its own, no held-out predictions."""
    return Fitted(fit(*args, **kwargs), {})


@dataclass(frozen=True)
class Architecture:
    """A network's builder, its training recipe, its default input size and the colour modes it takes."""

    build: Callable[..., Any]
    fit: Callable[..., Fitted]
    image_size: tuple[int, int]
    color_modes: tuple[str, ...] = tuple(COLOR_MODES)


ARCHITECTURES: dict[str, Architecture] = {
    "cnn": Architecture(build_cnn, fit_plain, (64, 64)),
    "efficientnet_lite0": Architecture(build_pretrained_classifier, fit_pretrained, (224, 224), ("rgb",)),
}


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; an InputError naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise InputError(f"arch must be one of {sorted(ARCHITECTURES)}. Received: arch={name!r}")
    return ARCHITECTURES[name]


def configure(config: TrainConfig) -> TrainConfig:
    """``config`` with its architecture checked and its image size defaulted from it."""
    arch = architecture(config.arch)
    if config.color_mode not in arch.color_modes:
        raise InputError(
            f"color_mode must be one of {list(arch.color_modes)} for arch={config.arch!r}. "
            f"Received: color_mode={config.color_mode!r}"
        )
    return dataclasses.replace(config, image_size=config.image_size or arch.image_size)


def build_model(
    arch: str, num_classes: int, image_size: tuple[int, int], color_mode: str, options: dict[str, Any]
) -> Any:
    """Build architecture ``arch`` for ``num_classes`` classes."""
    return architecture(arch).build(num_classes, image_size, channels_for(color_mode), **options)
