"""Model bundles: a directory with ``model.keras`` and ``bundle.json``, the contract between
training (which writes them) and classification (which reads them).

The model takes uint8 pixels (0..255) as decoded by :func:`classify_job.imageio.load_image`
and returns class probabilities; any normalisation lives inside the model, so the bundle's
preprocessing record is complete. ``bundle.json`` keeps keys this version does not know when it
is rewritten, so bundles written by newer versions lose nothing here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from classify_job import atomic
from classify_job.errors import BundleError
from classify_job.hashing import content_hash, weights_id
from classify_job.imageio import COLOR_MODES, RESIZE

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
SPEC_FILE = "bundle.json"
# 1: the first release. 2: unknown keys are kept on rewrite; training records its split hash;
# ``exports`` lists exported inference graphs; ``calibration``, ``accept_thresholds``, ``unfamiliar``.
FORMAT_VERSION = 2

DEFAULT_PREPROCESSING = {
    "function": "classify_job.imageio.load_image",
    "resize": RESIZE,
    "input_range": [0, 255],
    "exif_transpose": True,
    "alpha": "composited on white",
    "normalization": "inside the model",
}
RULE_KEYS = ("calibration", "accept_thresholds", "unfamiliar")  # the decision rule's keys
MAX_LABEL = 255  # characters; a label becomes a folder name and a Parquet value


@dataclass(frozen=True)
class BundleSpec:
    """What ``bundle.json`` holds. ``extra`` carries training facts (config, data, versions);
    ``exports`` the inference graphs exported from the model (format, file, sha256, versions and
    verification); ``calibration``, ``accept_thresholds`` and ``unfamiliar`` what decides whether a
    label is accepted (:mod:`classify_job.decisions.rule`); ``other`` the top-level keys this version does
    not know, written back unchanged."""

    labels: tuple[str, ...]
    image_size: tuple[int, int]
    color_mode: str
    architecture: str
    model_id: str = ""
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PREPROCESSING))
    extra: dict[str, Any] = field(default_factory=dict)
    exports: tuple[dict[str, Any], ...] = ()
    calibration: dict[str, Any] | None = None
    accept_thresholds: dict[str, Any] | None = None
    unfamiliar: dict[str, Any] | None = None
    other: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {
            "format_version": FORMAT_VERSION,
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "other"},
        }
        data.update(labels=list(self.labels), image_size=list(self.image_size), exports=list(self.exports))
        return {**data, **self.other}

    def verified_export(self, fmt: str | None) -> dict[str, Any] | None:
        """The export entry of format ``fmt`` whose verification passed, if there is one."""
        for export in self.exports:
            if export.get("format") == fmt and (export.get("verified") or {}).get("passed"):
                return export
        return None

    def rule_keys(self, runtime: str | None = None) -> dict[str, Any]:
        """``calibration``, ``accept_thresholds`` and ``unfamiliar`` for the graph ``runtime`` serves:
        its verified export entry's own when it carries them (an int8 graph fitted at train time),
        else the bundle's."""
        export = self.verified_export(runtime)
        owner = export if export is not None and isinstance(export.get("calibration"), dict) else None
        return {name: owner.get(name) if owner else getattr(self, name) for name in RULE_KEYS}

    @property
    def training_dir(self) -> Path | None:
        """The folder the bundle was trained on, as bundle.json records it (None when it does not)."""
        recorded = self.extra.get("training", {}).get("data_dir")
        return Path(recorded) if recorded else None

    def trained_on(self, data: str | os.PathLike) -> bool:
        """Whether ``data`` is the folder this bundle was trained on (the one check for it)."""
        return self.training_dir is not None and self.training_dir.resolve() == Path(data).resolve()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleSpec:
        version = data.get("format_version", 1)
        if isinstance(version, int) and version > FORMAT_VERSION:
            log.warning(
                "%s has format_version %s, newer than this version's %s", SPEC_FILE, version, FORMAT_VERSION
            )
        known = {f.name for f in dataclasses.fields(cls)} | {"format_version"}
        try:
            spec = cls(
                labels=tuple(str(label) for label in data["labels"]),
                image_size=(int(data["image_size"][0]), int(data["image_size"][1])),
                color_mode=str(data["color_mode"]),
                architecture=str(data["architecture"]),
                model_id=str(data.get("model_id", "")),
                preprocessing=dict(data.get("preprocessing") or DEFAULT_PREPROCESSING),
                extra=dict(data.get("extra") or {}),
                exports=tuple(dict(e) for e in data.get("exports") or ()),
                calibration=data.get("calibration"),
                accept_thresholds=data.get("accept_thresholds"),
                unfamiliar=data.get("unfamiliar"),
                other={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BundleError(f"{SPEC_FILE} is missing or has a malformed field: {exc!r}") from exc
        spec.validate()
        return spec

    def validate(self) -> None:
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise BundleError(f"a bundle needs two or more distinct labels. Received: {self.labels}")
        for label in self.labels:
            if "\0" in label or len(label) > MAX_LABEL:
                raise BundleError(
                    f"a label must hold no NUL and at most {MAX_LABEL} characters. Received: {label[:80]!r}"
                    + (f" ({len(label)} characters)" if len(label) > MAX_LABEL else "")
                )
        owners = [("", {name: getattr(self, name) for name in RULE_KEYS})]
        owners += [(f"{e.get('format')} export's ", e) for e in self.exports if "calibration" in e]
        for owner, keys in owners:
            for name in RULE_KEYS:
                if keys.get(name) is not None and not isinstance(keys.get(name), dict):
                    raise BundleError(f"{SPEC_FILE}'s {owner}{name} must be an object or null")
        if self.color_mode not in COLOR_MODES:
            raise BundleError(f"unknown color_mode. Received: {self.color_mode!r}")
        if min(self.image_size) < 8:
            raise BundleError(f"image_size is too small. Received: {self.image_size}")


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its directory, its spec and the Keras model."""

    path: Path
    spec: BundleSpec
    model: Any


def model_id(architecture: str, model: Any) -> str:
    """``<architecture>-<hash of the weights>``: changes exactly when the weights change."""
    return f"{architecture}-{weights_id(model.weights)}"


def save_bundle(directory: str | os.PathLike, model: Any, spec: BundleSpec) -> BundleSpec:
    """Write ``model.keras`` and ``bundle.json`` into ``directory``; returns the spec with its model_id.

    Each file is written under a temporary name and renamed, so a reader never sees half a bundle.
    """
    spec = save_model(directory, model, spec)
    write_spec(directory, spec)
    return spec


def save_model(directory: str | os.PathLike, model: Any, spec: BundleSpec) -> BundleSpec:
    """Write ``model.keras`` into ``directory`` (atomically); returns ``spec`` with its model_id,
    validated, for the caller to complete and write with :func:`write_spec`."""
    spec = dataclasses.replace(spec, model_id=model_id(spec.architecture, model))
    spec.validate()
    with atomic.atomic_path(Path(directory) / MODEL_FILE) as tmp:
        model.save(tmp)
    return spec


@contextmanager
def _weights_without_initializers() -> Iterator[None]:
    """Create the model's variables as zeros instead of running their initializers.

    Every weight is overwritten from the file a moment later, and on JAX each initializer of a new
    shape is an XLA compilation (seconds for a whole network). Uses Keras' private variable hook;
    where a Keras version lacks it, initializers simply run.
    """
    from keras.src.backend.common import variables

    original = getattr(variables.Variable, "_initialize_with_initializer", None)
    if original is None:
        yield
        return

    def zeros(self: Any, initializer: Any) -> None:
        self._initialize(np.zeros(self._shape, dtype=self._dtype))

    variables.Variable._initialize_with_initializer = zeros
    try:
        yield
    finally:
        variables.Variable._initialize_with_initializer = original


def bundle_file(directory: str | os.PathLike, relname: Any, sha256: Any = None, remedy: str = "") -> Path:
    """The path of the file ``relname`` (as ``bundle.json`` names it) inside the bundle ``directory``,
    checked: a relative POSIX path that stays inside the bundle, no symbolic link on the way, a
    regular file, and, when ``sha256`` is given (as recorded), bytes with that SHA-256. Anything else
    is a BundleError; ``remedy`` is added to its message. The bundle directory itself may be a link.
    """
    directory = Path(directory)
    suffix = f"; {remedy}" if remedy else ""
    rel = PurePosixPath(relname) if isinstance(relname, str) else None
    if (
        rel is None
        or not relname
        or "\0" in relname
        or "\\" in relname
        or rel.is_absolute()
        or not rel.parts
        or any(part in ("..", "") for part in rel.parts)
        or rel.parts[0].endswith(":")  # a Windows drive
    ):
        raise BundleError(f"{SPEC_FILE} names a file outside the bundle {directory}: {relname!r}{suffix}")
    path, current = directory.joinpath(*rel.parts), directory
    for part in rel.parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            raise BundleError(f"{path} is missing{suffix}") from None
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc}{suffix}") from exc
        if stat.S_ISLNK(info.st_mode):
            raise BundleError(f"{current} is a symbolic link; a bundle's files must be inside it{suffix}")
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path} is not a regular file{suffix}")
    if sha256 is not None:
        if not isinstance(sha256, str):
            raise BundleError(f"{SPEC_FILE} records a malformed sha256 for {relname!r}: {sha256!r}{suffix}")
        try:
            actual = content_hash(path, follow_symlinks=False)
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc}{suffix}") from exc
        if actual != sha256.lower():
            raise BundleError(
                f"{path} changed since it was verified (its sha256 is not the recorded one){suffix}"
            )
    return path


def loader_error(path: Path, exc: BaseException) -> BundleError:
    """A BundleError, on one line, for a bundle file that its library could not parse."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return BundleError(f"cannot load {path}: {text[:400]}")


def write_spec(directory: str | os.PathLike, spec: BundleSpec) -> None:
    """(Re)write ``bundle.json`` atomically, keeping the keys this version does not know."""
    atomic.write_json(Path(directory) / SPEC_FILE, spec.to_json())


def read_spec(directory: str | os.PathLike) -> BundleSpec:
    """Read and validate ``bundle.json`` without loading the model."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"model bundle not found: {directory} is not a directory")
    spec_path = directory / SPEC_FILE
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{spec_path} is missing; is {directory} a model bundle?") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {spec_path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{spec_path} does not hold a JSON object")
    return BundleSpec.from_json(data)


def load_bundle(directory: str | os.PathLike, spec: BundleSpec | None = None) -> Bundle:
    """Load a bundle with Keras' safe mode (no arbitrary code from the file); ``spec`` is its
    ``bundle.json`` when the caller has read it already."""
    import keras

    import classify_job.nets  # noqa: F401  registers custom layers for the loader

    directory = Path(directory)
    spec = read_spec(directory) if spec is None else spec
    model_path = bundle_file(directory, MODEL_FILE)
    try:
        with _weights_without_initializers():
            model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise loader_error(model_path, exc) from exc
    n_out = model.outputs[0].shape[-1]
    if n_out != len(spec.labels):
        raise BundleError(f"model has {n_out} outputs but {SPEC_FILE} lists {len(spec.labels)} labels")
    return Bundle(path=directory, spec=spec, model=model)
