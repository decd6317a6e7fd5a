"""--help: each default an option's help shows is the default of the settings dataclass the command
builds (or, where no field holds one, said in words); help renders as rich markup in CliRunner and
in a subprocess with no terminal."""

import dataclasses
import importlib
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from classify_job.cli import app
from classify_job.train.architectures import ARCHITECTURES

runner = CliRunner()
DEFAULT = re.compile(r"\[default: ([^\]]*)\]")


def commands() -> dict:
    """Every command of the CLI by its words (``("review", "export")``), groups walked."""
    found = {}

    def walk(command, words: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, (*words, name))
        else:
            found[words] = command

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = commands()


def shown_defaults(words: tuple[str, ...], command) -> dict[str, str]:
    """Parameter name -> the default ``--help`` shows for it, read from the rendered help (wide
    enough that each option is one line)."""
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    shown = {}
    for line in result.output.splitlines():
        match = DEFAULT.search(line)
        names = line.strip("│ ").split()
        param = next((p for p in command.params if names and names[0] in (*p.opts, p.name)), None)
        if match and param is not None:
            shown[param.name] = match.group(1)
    return shown


def field_default(command, name: str):
    """The default of the settings field option ``name`` sets (dataclasses.MISSING if none)."""
    field_name = getattr(command, "renamed", {}).get(name, name)
    for path in getattr(command, "settings", ()):
        module, cls = path.split(":")
        fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
        if field_name in fields:
            return fields[field_name].default
    return dataclasses.MISSING


def as_help(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_every_shown_default_is_the_settings_default(words):
    command = COMMANDS[words]
    shown = shown_defaults(words, command)
    for param in command.params:
        if param.default is not None:  # Typer shows a real default itself: it cannot drift
            continue
        default = field_default(command, param.name)
        plain = default not in (dataclasses.MISSING, None) and not isinstance(default, bool)
        if plain:
            assert shown.get(param.name) == as_help(default), (words, param.name)
        elif param.name == "image_size":  # the architecture's, when --image-size is not given
            sizes = {name: str(a.image_size[0]) for name, a in ARCHITECTURES.items()}
            each = ", ".join(f"{size} for {name}" for name, size in sizes.items())
            assert shown[param.name] == (sizes["efficientnet_lite0"] if words == ("tune",) else each)
        elif param.name in shown:  # what None means, in words: a number here is a copy that can drift
            assert not re.search(r"\d", shown[param.name]), (words, param.name, shown[param.name])


def test_the_commands_that_build_settings_show_their_defaults():
    with_defaults = {words for words, command in COMMANDS.items() if getattr(command, "settings", ())}
    assert {("classify",), ("train",), ("tune",), ("evaluate",), ("promote",), ("tag",)} <= with_defaults
    shown = shown_defaults(("classify",), COMMANDS[("classify",)])
    assert shown["batch_size"] == "32" and shown["ext"].startswith(".jpg, ")


def test_help_is_rich_markup_with_literal_brackets_kept():
    result = runner.invoke(app, ["classify", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "TOML job file with a [classify] table." in result.output
    assert "[default: start a local one]" in result.output
    assert "\\[" not in result.output
    assert "╭─ Options" in result.output  # rich panels, not click's plain help


def test_help_shows_twice_without_doubling_defaults():
    for _ in range(2):
        result = runner.invoke(app, ["promote", "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "--resamples" in line)
    assert line.count("[default:") == 1, line


def test_every_help_renders_in_a_subprocess_without_a_terminal():
    """One interpreter renders the top-level help and every command's, output a pipe, COLUMNS unset."""
    code = (
        "import sys\n"
        "from classify_job.cli import app\n"
        "for words in sys.argv[1:]:\n"
        "    try:\n"
        "        app([*words.split(), '--help'], prog_name='classify-job')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (words, exc.code)\n"
        "    print('=== end', words or 'root')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    words = ["", *(" ".join(w) for w in COMMANDS)]
    proc = subprocess.run(
        [sys.executable, "-c", code, *words],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("=== end") == len(words)
    assert "Usage: classify-job [OPTIONS] COMMAND" in proc.stdout
    assert "[default: 32]" in proc.stdout and "[default: 2000]" in proc.stdout
    assert max(map(len, proc.stdout.splitlines())) <= 80  # rich's width when no terminal says one
