"""The layout of docs/architecture.md holds: no import cycles, each layer imports down.

Every import statement of ``ssl_core`` and ``ssl_plugins`` counts, those under
``if TYPE_CHECKING:`` and inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ssl_core

CORE = Path(ssl_core.__file__).parent
PLUGINS = CORE.parent / "plugins"

#: What each part of ``ssl_core`` may import from ``ssl_core`` (docs/architecture.md).
MAY_IMPORT = {
    "errors": set(),
    "math": set(),
    "api": {"errors"},
    "recipe": {"api", "errors"},
    "engine": {"api", "errors", "math", "recipe"},
    "experiments": {"api", "engine", "errors", "recipe"},
    "tuning": {"api", "engine", "errors", "experiments", "recipe"},
    "cli": {"api", "engine", "errors", "experiments", "recipe", "tuning"},
    "__main__": {"cli"},
    "testing": {"api", "cli", "engine", "errors", "recipe"},
    "__init__": {"api", "engine", "errors"},
}


def module_name(path: Path) -> str:
    if path.is_relative_to(PLUGINS):
        parts = ["ssl_plugins", *path.relative_to(PLUGINS).with_suffix("").parts]
    else:
        parts = ["ssl_core", *path.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    files = [*CORE.rglob("*.py"), *PLUGINS.rglob("*.py")]
    return {module_name(path): path for path in files}


def imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (``from a import b`` counts ``a.b`` if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: imported(path, modules) - {name} for name, path in modules.items()}


def part_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if parts == ["ssl_core"] else parts[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_there_is_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_each_part_of_ssl_core_imports_only_the_parts_below_it():
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.startswith("ssl_core")
        for target in targets
        if target.startswith("ssl_core")
        and part_of(target) != part_of(module)
        and part_of(target) not in MAY_IMPORT[part_of(module)]
    ]
    assert wrong == []


def test_builtin_plugins_never_import_the_command_line():
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.startswith("ssl_plugins")
        for target in targets
        if target.startswith("ssl_core.cli")
    ]
    assert wrong == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
