"""The networks ``train --arch`` can build, each with its training recipe and input facts.

Add a network in one entry: a parser of its ``arch_options`` (a dict from the job file or flags,
parsed once per training into :attr:`~classify_job.train.state.TrainRun.options`), a builder
``(num_classes, image_size, channels, options)`` returning a Keras model from float32 pixels 0..255
to probabilities, and a recipe ``(net, run)`` returning a :class:`~classify_job.train.fit.Fitted`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from classify_job.errors import InputError
from classify_job.imageio import COLOR_MODES, channels_for
from classify_job.train.config import TrainConfig

if TYPE_CHECKING:
    from classify_job.train.fit import Fitted
    from classify_job.train.state import TrainRun

# The registry is read by `train --help` for its defaults, so it imports no Keras: each entry
# imports its network's code when it is called.


def fit_plain(net: Any, run: TrainRun) -> Fitted:
    """:func:`~classify_job.train.fit.fit` as a recipe: the history and fit's own facts (the
    budget, when one is set), no held-out predictions."""
    from classify_job.train.fit import fit_with_facts

    return fit_with_facts(net, run.data, run.config, run.weights, run.on_epoch, run.callbacks)


def _build_cnn(num_classes: int, image_size: tuple[int, int], channels: int, options: dict[str, Any]) -> Any:
    from classify_job.nets.cnn import build_cnn

    return build_cnn(num_classes, image_size, channels, **options)


CNN_OPTIONS = ("top_width", "dropout", "tta")  # classify_job.nets.cnn.cnn's keyword arguments


def _cnn_options(options: dict[str, Any]) -> dict[str, Any]:
    """The cnn's ``arch_options`` (its builder's keyword arguments); an unknown one is an InputError
    naming it, so a Lite0-only flag such as ``--fine-tune-blocks`` says so instead of failing inside Keras."""
    unknown = sorted(set(options) - set(CNN_OPTIONS))
    if unknown:
        raise InputError(
            f"arch cnn takes arch_options {list(CNN_OPTIONS)}; {unknown} belong to another "
            f"architecture (e.g. --arch efficientnet_lite0). Received: {dict(options)}"
        )
    return dict(options)


def _build_lite0(*args: Any) -> Any:
    from classify_job.train.finetune import build_pretrained_classifier

    return build_pretrained_classifier(*args)


def _fit_lite0(net: Any, run: TrainRun) -> Fitted:
    from classify_job.train.finetune import fit_pretrained

    return fit_pretrained(net, run)


def _lite0_options(options: dict[str, Any]) -> Any:
    from classify_job.train.finetune import FinetuneOptions

    return FinetuneOptions.from_dict(options)


@dataclass(frozen=True)
class Architecture:
    """A network's builder, its training recipe, its default input size, the colour modes it takes
    and the parser of its ``arch_options`` (the cnn's are its builder's keyword arguments)."""

    build: Callable[..., Any]
    fit: Callable[..., Fitted]
    image_size: tuple[int, int]
    color_modes: tuple[str, ...] = tuple(COLOR_MODES)
    options: Callable[[dict[str, Any]], Any] = dict


ARCHITECTURES: dict[str, Architecture] = {
    "cnn": Architecture(_build_cnn, fit_plain, (64, 64), options=_cnn_options),
    "efficientnet_lite0": Architecture(_build_lite0, _fit_lite0, (224, 224), ("rgb",), _lite0_options),
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


def parse_options(config: TrainConfig) -> Any:
    """``config.arch_options`` parsed by its architecture: an InputError names a wrong one."""
    return architecture(config.arch).options(config.arch_options)


def build_model(
    arch: str, num_classes: int, image_size: tuple[int, int], color_mode: str, options: dict[str, Any]
) -> Any:
    """Build architecture ``arch`` for ``num_classes`` classes from unparsed ``options``."""
    parsed = architecture(arch).options(options)
    return architecture(arch).build(num_classes, image_size, channels_for(color_mode), parsed)


def build_net(run: TrainRun) -> Any:
    """Build ``run``'s network, one output per class of its data, from its parsed options."""
    config = run.config
    classes = len(run.data.index.classes)
    return architecture(config.arch).build(
        classes, config.image_size, channels_for(config.color_mode), run.options
    )
