"""The package layout is the architecture: dependencies point one way, without cycles, and every
module stays small enough to summarise in a line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "classify_job"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """Every module ``path`` imports (any depth, TYPE_CHECKING included), with True when the
    import runs at module load (not inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node, top_level in _walk(tree, True):
        if isinstance(node, ast.Import):
            found += [(alias.name, top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub if sub in MODULES else node.module, top_level))
    return found


def _walk(node: ast.AST, top_level: bool):
    for child in ast.iter_child_nodes(node):
        yield child, top_level
        inside = top_level and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, inside)


def internal_graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in imports_of(path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


def test_no_import_cycles():
    graph = internal_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize(
    "stage",
    [
        "classify_job.classify",
        "classify_job.report",
        "classify_job.decisions.rule",
        "classify_job.decisions.calibration",
    ],
)
def test_classify_and_report_never_import_training(stage):
    offenders = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if name.startswith(stage)
        for target, _ in imports_of(path)
        if target.startswith("classify_job.train")
    ]
    assert not offenders


@pytest.mark.parametrize(
    "stage", ["classify_job.classify", "classify_job.report", "classify_job.decisions.rule"]
)
def test_classify_and_report_load_keras_only_when_a_model_runs(stage):
    heavy = ("keras", "jax", "sklearn", "scipy", "tensorflow", "torch")
    offenders = [
        f"{name} imports {target} at module level"
        for name, path in MODULES.items()
        if name.startswith(stage)
        for target, top_level in imports_of(path)
        if top_level and target.split(".")[0] in heavy
    ]
    assert not offenders


def test_library_code_never_imports_the_command_line():
    offenders = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if not name.startswith("classify_job.cli") and name != "classify_job.__main__"
        for target, _ in imports_of(path)
        if target.startswith("classify_job.cli")
    ]
    assert not offenders


def test_modules_stay_small():
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_stage_is_a_folder():
    top_level = {name for name in MODULES if name.count(".") == 1}
    assert top_level == {
        "classify_job.__main__",
        "classify_job.atomic",
        "classify_job.bundle",
        "classify_job.config",
        "classify_job.errors",
        "classify_job.hashing",
        "classify_job.imageio",
        "classify_job.predictions",
        "classify_job.runrecords",
        "classify_job.runtime",
        "classify_job.versions",
        "classify_job.walk",
        "classify_job.classify",
        "classify_job.cli",
        "classify_job.decisions",
        "classify_job.loop",
        "classify_job.nets",
        "classify_job.report",
        "classify_job.sampledata",
        "classify_job.train",
    }


def test_a_report_never_pays_for_keras(tmp_path):
    """Importing the classify run and the report does not import Keras or JAX (checked in a clean
    interpreter, since this test process has Keras loaded already)."""
    import subprocess
    import sys

    code = (
        "import sys, classify_job.classify.pipeline, classify_job.report.html, classify_job.report.tagging; "
        "print(sorted(m for m in ('keras', 'jax', 'sklearn', 'scipy') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
