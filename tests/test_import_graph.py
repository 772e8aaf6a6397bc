"""The library core imports downward only: no cycle, and each module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hoconv

PACKAGE = Path(hoconv.__file__).parent
# rank arithmetic / counting, decomposition, layers, pruning, whole-model factorization
CORE = (
    "rank",
    "decompose",
    "layers",
    "pruning",
    "factorization",
    "functional",
    "_conv_base",
    "_tucker_conv",
)


def _module_file(name: str) -> Path | None:
    """The file of ``hoconv.<name>`` (a module or a package's __init__), or None outside hoconv."""
    parts = name.split(".")
    base = PACKAGE.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _hoconv_imports(name: str) -> set[str]:
    """Every ``hoconv.*`` module ``hoconv.<name>`` imports, at top level or inside functions."""
    tree = ast.parse(_module_file(name).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from hoconv import rank` uses hoconv.rank; `from hoconv.x import f` uses hoconv.x
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            modules = [sub for sub in subs if _module_file(sub.partition(".")[2])]
            targets = modules if len(modules) == len(subs) else [node.module, *modules]
        else:
            continue
        for target in targets:
            if target.startswith("hoconv.") and _module_file(target[len("hoconv.") :]):
                found.add(target[len("hoconv.") :])
    return found


def _graph() -> dict[str, set[str]]:
    """The import graph reachable from the core modules (module -> modules it imports)."""
    graph: dict[str, set[str]] = {}
    todo = list(CORE)
    while todo:
        name = todo.pop()
        if name in graph:
            continue
        graph[name] = _hoconv_imports(name) - {name}
        todo.extend(graph[name])
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_core_imports_are_parsed():
    graph = _graph()
    assert {"rank", "_conv_base", "_tucker_conv"} <= graph["layers"]
    assert "layers" in graph["pruning"] and "layers" in graph["factorization"]


def test_core_import_graph_has_no_cycle():
    graph = _graph()
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"


def test_core_modules_import_downward_only():
    order = [
        "functional",
        "decompose",
        "_conv_base",
        "rank",
        "_tucker_conv",
        "layers",
        "pruning",
        "factorization",
    ]
    graph = _graph()
    for i, name in enumerate(order):
        upward = graph[name] & set(order[i:])
        assert not upward, f"hoconv.{name} imports {sorted(upward)}, which sit above it"


def test_rank_no_longer_reexports_pruning():
    import hoconv.rank

    assert not hasattr(hoconv.rank, "prune") and not hasattr(hoconv.rank, "__getattr__")


def test_each_core_module_imports_alone():
    # one fresh interpreter (torch loaded once); hoconv is dropped from sys.modules before each
    code = (
        "import importlib, sys, torch\n"
        f"for name in {CORE!r}:\n"
        "    for key in [k for k in sys.modules if k == 'hoconv' or k.startswith('hoconv.')]:\n"
        "        del sys.modules[key]\n"
        "    importlib.import_module('hoconv.' + name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
