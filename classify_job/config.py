"""Job configuration: frozen dataclasses, loadable from TOML job files, overridable from the CLI."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classify_job.errors import InputError
from classify_job.scan import DEFAULT_EXTENSIONS, Shard

ENGINE_NAMES = ("local", "ray")


@dataclass(frozen=True)
class ClassifyConfig:
    """Everything one ``classify`` run needs."""

    input_dir: Path
    model: Path
    out: Path
    batch_size: int = 32
    workers: int = 2
    top_k: int = 3
    shard: Shard = field(default_factory=Shard)
    fresh: bool = False
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    follow_symlinks: bool = False
    max_error_rate: float | None = None
    rows_per_part: int = 10_000
    commit_every_s: float = 120.0
    log_every_s: float = 30.0
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int = 1

    def __post_init__(self) -> None:
        _check_positive(
            batch_size=self.batch_size,
            workers=self.workers,
            top_k=self.top_k,
            rows_per_part=self.rows_per_part,
            ray_actors=self.ray_actors,
        )
        if self.engine not in ENGINE_NAMES:
            raise InputError(f"--engine must be one of {', '.join(ENGINE_NAMES)}. Received: {self.engine!r}")
        if self.max_error_rate is not None and not 0.0 <= self.max_error_rate <= 1.0:
            raise InputError(f"--max-error-rate must be between 0 and 1. Received: {self.max_error_rate}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1. Received: {value}")


def read_toml(path: Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a TOML job file, with a readable error for every failure."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise InputError(f"job file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"job file {path} is not valid TOML: {exc}") from exc
    if section not in data or not isinstance(data[section], dict):
        raise InputError(f"job file {path} has no [{section}] table")
    return data[section]


def classify_config_from_toml(path: Path, **overrides: Any) -> ClassifyConfig:
    """Build a ClassifyConfig from ``[classify]`` in a job file; ``overrides`` (not None) win.

    Relative paths in the file are taken relative to the current directory, as on the CLI.
    """
    table = read_toml(path, "classify")
    known = {f.name for f in dataclasses.fields(ClassifyConfig)}
    unknown = set(table) - known
    if unknown:
        raise InputError(f"job file {path}: unknown keys in [classify]: {sorted(unknown)}")
    values = {**table, **{k: v for k, v in overrides.items() if v is not None}}
    return _coerce(values)


def _coerce(values: dict[str, Any]) -> ClassifyConfig:
    for key in ("input_dir", "model", "out"):
        if key not in values:
            raise InputError(f"missing required setting: {key}")
        values[key] = Path(values[key])
    if isinstance(values.get("shard"), str):
        values["shard"] = Shard.parse(values["shard"])
    if "extensions" in values:
        values["extensions"] = tuple(values["extensions"])
    try:
        return ClassifyConfig(**values)
    except TypeError as exc:
        raise InputError(f"bad job settings: {exc}") from exc


def classify_config_from_options(config_file: Path | None, options: dict[str, Any]) -> ClassifyConfig:
    """The CLI's view: a job file if given, with every option the user set taking precedence."""
    if config_file is not None:
        return classify_config_from_toml(config_file, **options)
    given = {k: v for k, v in options.items() if v is not None}
    missing = [
        f"--{k}" if k != "input_dir" else "INPUT_DIR" for k in ("input_dir", "model", "out") if k not in given
    ]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (or give a job file with --config)")
    return _coerce(given)
