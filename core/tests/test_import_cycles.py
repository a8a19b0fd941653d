"""No import cycles inside phi3-core or inside any plugin's ``src``.

The graph is read from the source with :mod:`ast` (nothing is imported): a module's edges are every
``import`` / ``from ... import`` in it, at module level or inside a function (a deferred import is
still a dependency, and "imported on first use" is how the ``model`` <-> ``tools`` circle hid).
Excluded, on purpose:

- imports under ``if TYPE_CHECKING:`` (annotations only, never executed);
- the implicit import of a parent package (``import phi3.model`` runs ``phi3/__init__.py`` first):
  only the module named is an edge, else every module of a package with a re-exporting
  ``__init__`` would sit on a cycle through it;
- imports of modules outside the tree being checked (another distribution, the stdlib, vendors);
- string imports (``importlib.import_module``), which ast cannot resolve.

``from package import name`` is an edge to ``package.name`` when that is a module of the tree, else
to ``package``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE_SRC = REPO / "core" / "src"
PLUGIN_SRCS = {
    "phi3-openvino": REPO / "plugins" / "phi3-openvino" / "src",
    "phi3-dml": REPO / "plugins" / "phi3-dml" / "src",
    "phi3-npu": REPO / "plugins" / "phi3-npu" / "src",
    "phi3-llamacpp": REPO / "plugins" / "phi3-llamacpp" / "src",
}
KNOWN_PLUGIN_CYCLES: dict[str, str] = {}
"""Plugins with a cycle nobody may fix in this change (plugin src is owned elsewhere): the case is a
strict xfail naming the cycle, so it turns red the day the cycle is gone (and the entry must go)."""


# -- the graph -------------------------------------------------------------------------------------


def modules_of(src: Path) -> dict[str, Path]:
    """Every module under ``src`` (a folder holding top-level packages), by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth, except the body of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(module: str, is_package: bool, source: str) -> list[tuple[str, ...]]:
    """What each name ``module``'s source imports may be, most specific first (relative imports
    resolved): ``import X.y`` is ``("X.y",)``; ``from X import a`` is ``("X.a", "X")``, the
    submodule when there is one, else a name defined in ``X``."""
    found: list[tuple[str, ...]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name,) for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            base = ".".join(p for p in [*parts[: len(parts) - (node.level - 1)], node.module or ""] if p)
        else:
            base = node.module or ""
        found.extend((f"{base}.{alias.name}", base) for alias in node.names)
    return found


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports (see the module docstring for the rules)."""
    modules = modules_of(src)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for candidates in imported_names(name, path.name == "__init__.py", path.read_text(encoding="utf-8")):
            target = next((c for c in candidates if c in modules), None)
            if target is not None and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan), each as a path that starts
    and ends at its smallest module, e.g. ``["a", "b", "a"]``; sorted, so the report is stable."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})

    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(component)
    return sorted(_cycle_in(graph, component) for component in components)


def _cycle_in(graph: Mapping[str, Iterable[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's smallest module, staying inside the component."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt in component and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its component {sorted(component)}")


def assert_no_cycles(src: Path) -> None:
    cycles = find_cycles(import_graph(src))
    where = src.relative_to(REPO) if src.is_relative_to(REPO) else src
    assert not cycles, f"import cycles in {where}: " + "; ".join(" -> ".join(c) for c in cycles)


# -- the finder itself -----------------------------------------------------------------------------


def test_the_finder_reports_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    # two cycles sharing a module are one component; the shortest cycle through its smallest module is shown
    assert find_cycles({"m": {"t", "x"}, "t": {"m"}, "x": {"y"}, "y": {"m"}}) == [["m", "t", "m"]]


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.model import Model\n")
    (pkg / "model.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import hints\n"
        "def chat():\n    from pkg import tools\n    return tools\n"
    )
    (pkg / "tools.py").write_text("from .model import Model\nimport json\n")
    (pkg / "hints.py").write_text("import pkg.model\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("from .. import tools\nfrom ..sub import other\n")
    (pkg / "sub" / "other.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph == {
        "pkg": {"pkg.model"},
        "pkg.model": {"pkg.tools"},  # the function-level import counts; the TYPE_CHECKING one does not
        "pkg.tools": {"pkg.model"},
        "pkg.hints": {"pkg.model"},
        "pkg.sub": set(),
        "pkg.sub.deep": {"pkg.tools", "pkg.sub.other"},
        "pkg.sub.other": set(),
    }
    assert find_cycles(graph) == [["pkg.model", "pkg.tools", "pkg.model"]]
    with pytest.raises(AssertionError, match=re.escape("pkg.model -> pkg.tools -> pkg.model")):
        assert_no_cycles(tmp_path)


# -- the trees -------------------------------------------------------------------------------------


def test_core_has_no_import_cycle() -> None:
    assert_no_cycles(CORE_SRC)


def _plugin_cases() -> list[object]:
    cases: list[object] = []
    for name, src in PLUGIN_SRCS.items():
        marks = []
        if name in KNOWN_PLUGIN_CYCLES:
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN_PLUGIN_CYCLES[name]))
        cases.append(pytest.param(src, id=name, marks=marks))
    return cases


@pytest.mark.parametrize("src", _plugin_cases())
def test_plugin_has_no_import_cycle(src: Path) -> None:
    if not src.is_dir():
        pytest.skip(f"{src.relative_to(REPO)} is not in this checkout")
    assert_no_cycles(src)
