"""Typed settings from job files and flags: one reader, one merge (file first, flags win), one
unknown-key check and one way to validate.

A stage declares its settings as a frozen dataclass (``ClassifyConfig``, ``TrainConfig``, ...);
:func:`resolve` builds it from the ``[section]`` table of a TOML job file and the flags the user
gave. Nested dataclass fields (``[train.augment]``) are built the same way, recursively, and
dict-valued settings merge key by key, so a flag overrides one ``arch_options`` key, not all.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from classify_job.errors import InputError

CPUS = os.cpu_count() or 1
MAX_THREADS = 4 * CPUS  # threads and workers: more only thrash (100,000 started 32,000 threads)
C = TypeVar("C")


class SettingError(InputError):
    """One setting failed its type or range rule. :func:`build` prefixes where it came from (a job
    file's table or an option), so a bad value is named as the user wrote it."""

    def __init__(self, key: str, expected: str, value: Any) -> None:
        shown = str(value) if isinstance(value, Path) else repr(value)
        super().__init__(f"{key} must be {expected}. Received: {key}={shown}")
        self.key = key


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


def build(cls: type[C], values: Mapping[str, Any], where: str, origins: Mapping[str, str] | None = None) -> C:
    """``cls(**values)`` after checking every key is one of its fields and every value has its
    field's type (:func:`check_type`); nested dataclass fields given as tables are built the same
    way. A type or range error (``check`` in ``__post_init__``) is prefixed with where its value
    came from: ``origins[key]`` if given, else ``where``, which also names the table otherwise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    origins = origins or {}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    try:
        for key, value in values.items():
            nested = hints.get(key)
            if dataclasses.is_dataclass(nested) and isinstance(value, Mapping):
                value = build(nested, value, origins.get(key, f"{where}.{key}"))
            elif key in hints:
                check_type(key, value, hints[key])
            kwargs[key] = value
        return cls(**kwargs)
    except SettingError as exc:
        raise InputError(f"{origins.get(exc.key, where)}: {exc}") from exc
    except TypeError as exc:
        raise InputError(f"{where}: bad settings: {exc}") from exc


_SCALARS: dict[type, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a finite number",
    str: "a string",
    Path: "a path (a non-empty string)",
}


def check_type(key: str, value: Any, hint: Any) -> None:
    """Raise SettingError unless ``value`` fits ``hint``, as a TOML file or a flag may give it.

    bool is only ``true``/``false`` (not ``"no"``, not 1); int is a whole number and not a bool;
    float is a finite number (an int will do); a path is a non-empty string or a path; a
    ``tuple[str, ...]`` is a list of strings or one comma-separated string; ``X | None`` is X or
    nothing; a class with a ``parse`` method (``Shard``) takes its text form, as its ``EXPECTED``
    says. Other hints (dicts, nested tables, fixed tuples) are left to the dataclass."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            check_type(key, value, options[0])
        return
    if hint in _SCALARS:
        if not _fits(value, hint):
            raise SettingError(key, _SCALARS[hint], value)
    elif typing.get_origin(hint) is tuple and args == (str, Ellipsis):
        items = value if isinstance(value, list | tuple) else None
        if not isinstance(value, str) and (items is None or not all(isinstance(v, str) for v in items)):
            raise SettingError(key, "a list of strings or one comma-separated string", value)
    elif isinstance(hint, type) and hasattr(hint, "parse") and not isinstance(value, hint | str):
        raise SettingError(key, getattr(hint, "EXPECTED", f"text for a {hint.__name__}"), value)


def _fits(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is Path:
        return isinstance(value, str | os.PathLike) and str(value) != ""
    return isinstance(value, kind)


def resolve(
    cls: type[C],
    job_file: Path | None,
    section: str,
    required: Mapping[str, str] = {},
    flag_names: Mapping[str, str] = {},
    **flags: Any,
) -> C:
    """Build ``cls`` from ``[section]`` of ``job_file`` (if given) and ``flags`` (None = not given).

    ``required`` maps the fields that must come from one or the other to their names on the
    command line (``{"out": "--out"}``), so a missing one is named as the user would give it;
    ``flag_names`` names the other flags not spelled ``--field-name`` (``{"extensions": "--ext"}``).
    A bad value is named with where it came from: the job file's table, or the option.
    """
    file_values = read_job_table(job_file, section) if job_file is not None else {}
    values = merge(file_values, flags)
    missing = [shown for name, shown in required.items() if values.get(name) is None]
    if missing:
        names = ", ".join(missing)
        raise InputError(f"missing {names} (give them as options or in a job file with --config)")
    where = f"job file {job_file} [{section}]" if job_file is not None else "options"
    shown = {**{key: "--" + key.replace("_", "-") for key in flags}, **required, **flag_names}
    origins = {key: f"option {shown[key]}" for key, value in flags.items() if value is not None}
    return build(cls, values, where, origins)


def coerce_paths(settings: Any) -> None:
    """Turn every field of a frozen settings dataclass typed ``Path`` (or ``Path | None``) into a
    Path, whether a flag, a job file or a caller gave text; None stays None. The one place settings
    become paths, called from each settings class's ``__post_init__``."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is not None and not isinstance(value, Path) and Path in _path_hint(hints.get(f.name)):
            object.__setattr__(settings, f.name, Path(value))


def _path_hint(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def check(obj: object, rules: Mapping[str, tuple[bool, str]]) -> None:
    """Raise InputError (a SettingError) for the first rule that fails:
    ``{"epochs": (epochs >= 1, ">= 1")}``."""
    for name, (ok, expected) in rules.items():
        if not ok:
            raise SettingError(name, expected, getattr(obj, name))
