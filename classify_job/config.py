"""Typed settings from job files and flags: one reader, one merge (file first, flags win), one
unknown-key check and one way to validate.

A stage declares its settings as a frozen dataclass (``ClassifyConfig``, ``TrainConfig``, ...);
:func:`resolve` builds it from the ``[section]`` table of a TOML job file and the flags the user
gave. Nested dataclass fields (``[train.augment]``) are built the same way, recursively, and
dict-valued settings merge key by key, so a flag overrides one ``arch_options`` key, not all.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from classify_job.errors import InputError

C = TypeVar("C")


def read_job_table(path: Path, section: str, optional: bool = False) -> dict[str, Any]:
    """The ``[section]`` table of a TOML job file, with a readable error for every failure
    (``optional``: an empty table when the file has none)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise InputError(f"job file not found: {path}") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"job file {path} cannot be read as TOML: {exc}") from exc
    if optional and section not in data:
        return {}
    if not isinstance(data.get(section), dict):
        raise InputError(f"job file {path} has no [{section}] table")
    return data[section]


def merge(file_values: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """File values, overridden by every flag that was given (not None); dicts merge key by key."""
    merged = dict(file_values)
    for key, value in flags.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = {**merged[key], **value}
        merged[key] = value
    return merged


def build(cls: type[C], values: Mapping[str, Any], where: str) -> C:
    """``cls(**values)`` after checking every key is one of its fields; nested dataclass fields
    given as tables are built the same way. ``where`` names the table in error messages."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        nested = hints.get(key)
        if dataclasses.is_dataclass(nested) and isinstance(value, Mapping):
            value = build(nested, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"{where}: bad settings: {exc}") from exc


def resolve(
    cls: type[C], job_file: Path | None, section: str, required: Mapping[str, str] = {}, **flags: Any
) -> C:
    """Build ``cls`` from ``[section]`` of ``job_file`` (if given) and ``flags`` (None = not given).

    ``required`` maps the fields that must come from one or the other to their names on the
    command line (``{"out": "--out"}``), so a missing one is named as the user would give it.
    """
    file_values = read_job_table(job_file, section) if job_file is not None else {}
    values = merge(file_values, flags)
    missing = [shown for name, shown in required.items() if values.get(name) is None]
    if missing:
        names = ", ".join(missing)
        raise InputError(f"missing {names} (give them as options or in a job file with --config)")
    where = f"job file {job_file} [{section}]" if job_file is not None else "options"
    return build(cls, values, where)


def check(obj: object, rules: Mapping[str, tuple[bool, str]]) -> None:
    """Raise InputError for the first rule that fails: ``{"epochs": (epochs >= 1, ">= 1")}``."""
    for name, (ok, expected) in rules.items():
        if not ok:
            raise InputError(f"{name} must be {expected}. Received: {name}={getattr(obj, name)!r}")
