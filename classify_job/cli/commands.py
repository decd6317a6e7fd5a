"""The Typer command class every command uses: its help rewrapped for rich, and the ``[default: N]``
of each option read from the settings dataclass the command builds, so that it cannot drift.

Such options default to None in Typer, so that a flag overrides a job file's value only when it is
given (:func:`classify_job.config.merge`: file first, flags win); Typer then has no default of its
own to show. The dataclass is imported when help is shown, not when the CLI starts: the module of
``TrainConfig`` imports Keras, which ``classify`` and ``report`` never pay for.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import typer
from rich.markup import escape
from typer.core import TyperCommand


class Command(TyperCommand):
    """A command whose help shows the defaults of ``settings`` ("module:Class" paths, the first
    with a field wins) for its options that are unset by default. ``renamed`` maps a parameter to
    its field where the names differ; ``computed`` gives the text of a default no field holds."""

    settings: ClassVar[tuple[str, ...]] = ()
    renamed: ClassVar[Mapping[str, str]] = {}
    computed: ClassVar[Mapping[str, Callable[[], str]]] = {}

    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, help=rewrap(help), **kwargs)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        show_defaults(self.params, self.defaults())
        super().format_help(ctx, formatter)

    @classmethod
    def defaults(cls) -> dict[str, str]:
        """Parameter name -> the default its help shows (imports the settings' modules)."""
        by_field: dict[str, Any] = {}
        for config in reversed(cls.settings):
            by_field.update(plain_defaults(load(config)))
        texts = {name: shown(value) for name, value in by_field.items()}
        texts |= {name: shown(by_field[f]) for name, f in cls.renamed.items() if f in by_field}
        return texts | {name: text() for name, text in cls.computed.items()}


def settings_command(
    *settings: str, fields: Mapping[str, str] | None = None, **computed: Callable[[], str]
) -> type[Command]:
    """A :class:`Command` showing the defaults of ``settings``, e.g.
    ``settings_command("classify_job.classify.config:ClassifyConfig", fields={"ext": "extensions"})``."""
    attributes = {"settings": settings, "renamed": dict(fields or {}), "computed": computed}
    return type("SettingsCommand", (Command,), attributes)


def rewrap(help_text: str | None) -> str | None:
    """Each paragraph of a docstring on one line: rich help keeps the line breaks of every
    paragraph after the first, which then end mid-sentence."""
    if not help_text:
        return help_text
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(help_text).split("\n\n"))


def shown(value: Any) -> str:
    """A default as help writes it: ``32``, ``0.001``, ``cnn``; a sequence comma-separated, as
    ``--ext`` takes it."""
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    return str(value)


def plain_defaults(config: type) -> dict[str, Any]:
    """The defaults of a dataclass's fields that help shows: none for a required field, a field
    built by a factory, None ("not set") or a boolean (an on/off flag says its default)."""
    return {
        f.name: f.default
        for f in dataclasses.fields(config)
        if f.default is not dataclasses.MISSING and f.default is not None and not isinstance(f.default, bool)
    }


def load(path: str) -> type:
    """The class a ``"module:Class"`` path names."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def show_defaults(params: Sequence[Any], defaults: Mapping[str, str]) -> None:
    """Append ``[default: N]`` to the help of each option in ``defaults`` that Typer leaves unset;
    the bracket is escaped, since help is rich markup. Idempotent: help may be shown twice."""
    for param in params:
        text = defaults.get(param.name or "")
        help_text = getattr(param, "help", None) or ""
        if text is None or param.default is not None or "[default:" in help_text:
            continue
        param.help = f"{help_text} {escape(f'[default: {text}]')}".strip()
