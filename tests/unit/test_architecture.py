"""The house rules, checked on the source: layers import downwards only, no import cycle, small
modules and functions. (docs/architecture.md draws the same layers and lists every module.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "dpo_exp"

# Lowest first. A module may import from its own layer and the layers below it, never above.
LAYERS = [
    (
        "foundation",
        {
            "dpo_exp.errors",
            "dpo_exp.console",
            "dpo_exp.storage",
            "dpo_exp.runtime",
            "dpo_exp.threads",
            "dpo_exp.world",
            "dpo_exp.devices",
            "dpo_exp.rows",
            "dpo_exp.tasks",
            "dpo_exp.losses",
        },
    ),  # noqa: E501
    ("data", {"dpo_exp.data"}),
    ("models", {"dpo_exp.models"}),
    ("training run", {"dpo_exp.training"}),
    ("experiment", {"dpo_exp.experiment"}),
    ("report", {"dpo_exp.report"}),
    ("entry", {"dpo_exp.config", "dpo_exp.cli", "dpo_exp.commands"}),
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The project modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    if module == "dpo_exp":
        return 0  # the package's __init__: the thread policy, set before anything imports torch
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    assert find_cycle(GRAPH) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_from_its_layer_and_below(module):
    upward = sorted(target for target in GRAPH[module] if layer_of(target) > layer_of(module))
    names = {target: LAYERS[layer_of(target)][0] for target in upward}
    assert not upward, f"{module} ({LAYERS[layer_of(module)][0]}) imports upward: {names}"


def test_no_module_over_the_line_limit():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long


def test_no_function_over_the_line_limit():
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = length
    assert not long
