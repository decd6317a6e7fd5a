"""The settings of training runs: one run (``[train]``), its augmentation and a tune search (``[tune]``),
from flags and the tables of a job file.

What depends on the architecture (its default image size, the colour modes it accepts) is
settled by :func:`classify_job.train.architectures.configure` when training starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classify_job.config import CPUS, MAX_THREADS, build, check, coerce_paths, merge, read_job_table, resolve
from classify_job.decisions.attributes import parse_attributes
from classify_job.decisions.calibration import CLASS, SCOPES
from classify_job.decisions.rule import DEFAULT_TARGET_PRECISION
from classify_job.errors import InputError
from classify_job.imageio import COLOR_MODES
from classify_job.walk import DEFAULT_EXTENSIONS

LR_SCHEDULES = ("plateau", "cosine")
CLASS_WEIGHTING = ("auto", "balanced", "none")
REQUIRED = {"data_dir": "DATA", "out_dir": "--out"}


FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


@dataclass(frozen=True)
class AugmentConfig:
    """Random training-time transforms; all zero/"none" turns augmentation off.

    ``rotation`` is a fraction of a full turn (0.05 = up to 18 degrees), ``zoom`` and ``translate``
    fractions of the image size, ``contrast`` and ``brightness`` fractions of the 0..255 range.
    """

    flip: str = "horizontal"
    rotation: float = 0.05
    zoom: float = 0.1
    translate: float = 0.1
    contrast: float = 0.1
    brightness: float = 0.1

    def __post_init__(self) -> None:
        rules = {"flip": (self.flip in FLIP_MODES, f"one of {FLIP_MODES}")}
        for name in ("rotation", "zoom", "translate", "contrast", "brightness"):
            rules[name] = (0.0 <= getattr(self, name) < 1.0, "in [0, 1)")
        check(self, rules)

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any(
            (self.rotation, self.zoom, self.translate, self.contrast, self.brightness)
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; recorded in the bundle as ``extra["training"]``."""

    data_dir: Path
    out_dir: Path
    arch: str = "cnn"
    epochs: int = 30
    batch_size: int = 128
    image_size: tuple[int, int] | None = None  # None: the architecture's default
    color_mode: str = "rgb"
    seed: int = 0
    val_split: float = 0.1
    test_split: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "plateau"
    warmup_epochs: int = 0
    patience: int = 6
    budget_minutes: float | None = None  # None: no time budget; else the epochs are sized to it
    lr_patience: int = 2
    class_weighting: str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    arch_options: dict[str, Any] = field(default_factory=dict)
    target_precision: float = DEFAULT_TARGET_PRECISION
    precision_scope: str = CLASS  # "overall": one pooled threshold, a weaker guarantee
    attributes: dict[str, tuple[str, ...]] | str | None = None  # "gender=male,female garment=..."
    extensions: tuple[str, ...] = tuple(sorted(DEFAULT_EXTENSIONS))
    workers: int = 4
    overwrite: bool = False
    int8: bool = True  # also the int8 graph, gated against the float one (train/int8_export.py)

    def __post_init__(self) -> None:
        size = self.image_size
        if size is not None:
            size = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
        object.__setattr__(self, "image_size", size)
        coerce_paths(self)
        object.__setattr__(self, "extensions", tuple(e.lower() for e in self.extensions))
        object.__setattr__(self, "arch_options", dict(self.arch_options))
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", build(AugmentConfig, self.augment, "augment"))
        object.__setattr__(self, "attributes", parse_attributes(self.attributes) or None)
        self._validate()

    def _validate(self) -> None:
        size = self.image_size
        size_ok = size is None or (len(size) == 2 and min(size) >= 8)
        check(
            self,
            {
                "epochs": (self.epochs >= 1, ">= 1"),
                "batch_size": (self.batch_size >= 1, ">= 1"),
                "workers": (1 <= self.workers <= MAX_THREADS, f"in [1, {MAX_THREADS}] (4 x {CPUS} CPUs)"),
                "image_size": (size_ok, "(height, width), each >= 8"),
                "color_mode": (self.color_mode in COLOR_MODES, f"one of {sorted(COLOR_MODES)}"),
                "learning_rate": (self.learning_rate > 0, "> 0"),
                "lr_schedule": (self.lr_schedule in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
                "warmup_epochs": (0 <= self.warmup_epochs < self.epochs, "in [0, epochs)"),
                "budget_minutes": (self.budget_minutes is None or self.budget_minutes > 0, "> 0 (minutes)"),
                "class_weighting": (self.class_weighting in CLASS_WEIGHTING, f"one of {CLASS_WEIGHTING}"),
                "val_split": (0 <= self.val_split < 1 - self.test_split, "in [0, 1 - test_split)"),
                "test_split": (0 <= self.test_split < 1, "in [0, 1)"),
                "target_precision": (0 < self.target_precision < 1, "in (0, 1)"),
                "precision_scope": (self.precision_scope in SCOPES, f"one of {SCOPES}"),
            },
        )

    @classmethod
    def resolve(cls, job_file: Path | None = None, **flags: Any) -> TrainConfig:
        """From ``[train]`` in ``job_file`` (``[train.augment]``, ``[train.arch_options]``) and the
        flags given (None = not given); flags win, ``arch_options`` merge key by key."""
        return resolve(cls, job_file, "train", REQUIRED, **flags)

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with every override that is not None applied."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as recorded in ``bundle.json``."""
        data = dataclasses.asdict(self)
        data.update(data_dir=str(self.data_dir), out_dir=str(self.out_dir), extensions=list(self.extensions))
        data["image_size"] = list(self.image_size) if self.image_size else None
        return data


@dataclass(frozen=True)
class TuneConfig:
    """The base training run (data, output, image size, epochs...) and the search's limits."""

    train: TrainConfig
    trials: int = 20
    budget_minutes: float = 30.0

    def __post_init__(self) -> None:
        check(
            self,
            {
                "trials": (self.trials >= 1, ">= 1"),
                "budget_minutes": (self.budget_minutes > 0, "> 0"),
            },
        )
        check(self.train, {"arch": (self.train.arch == "efficientnet_lite0", "efficientnet_lite0 for tune")})

    @classmethod
    def resolve(cls, job_file: Path | None, train: TrainConfig, **flags: Any) -> TuneConfig:
        """Limits from ``[tune]`` in ``job_file`` (optional) and the flags given; flags win."""
        values = merge(read_job_table(job_file, "tune", optional=True) if job_file else {}, flags)
        unknown = sorted(set(values) - {"trials", "budget_minutes"})
        if unknown:
            raise InputError(f"[tune]: unknown keys {unknown}; known: ['budget_minutes', 'trials']")
        return cls(train, **values)
