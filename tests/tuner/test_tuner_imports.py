"""The tuner's modules import one another without a circle. Read from the source (ast), nothing is run.

`records` (what a study stores) reads the objective registry; the registry's `closest` objective
needs the knob distance, which lives with the knobs (`space`), not with the solver: the solver
imports `records` (the window's text), so a registry needing `solve` closed the circle
records -> registry -> solve -> records."""

from __future__ import annotations

import ast
from pathlib import Path

import featherface_tune

TUNER_DIR = Path(featherface_tune.__file__).parent / "tuner"
PREFIX = "featherface_tune.tuner."
FOUNDATIONS = ("records", "registry", "space")  # what the solver and the search build on


def tuner_imports(path: Path, module_level_only: bool) -> set[str]:
    """The tuner modules (short names) a file imports: at module level only, or anywhere (function
    bodies included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [n for stmt in tree.body for n in ast.walk(stmt)
             if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))] \
        if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PREFIX.rstrip("."):  # from featherface_tune.tuner import records
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PREFIX):
                found.add(node.module[len(PREFIX):].split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name[len(PREFIX):].split(".")[0] for a in node.names if a.name.startswith(PREFIX))
    return found - {path.stem}


def import_graph(folder: Path, module_level_only: bool) -> dict[str, set[str]]:
    return {p.stem: tuner_imports(p, module_level_only) for p in sorted(folder.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of `graph` as a path that ends where it starts, or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_no_circle_among_tuner_modules_at_module_level() -> None:
    cycle = find_cycle(import_graph(TUNER_DIR, module_level_only=True))
    assert cycle == [], " -> ".join(cycle)


def test_the_foundations_import_no_solver_or_search_even_lazily() -> None:
    """records, registry and space stand below the solver and the search: not even a function-level
    import reaches up (a lazy import is a circle Python merely defers)."""
    graph = import_graph(TUNER_DIR, module_level_only=False)
    assert "registry" in graph["records"]  # the check reads real imports (records reads the registry)
    for name in FOUNDATIONS:
        assert graph[name] <= set(FOUNDATIONS), f"{name} imports {sorted(graph[name] - set(FOUNDATIONS))}"
    assert find_cycle({k: v for k, v in graph.items() if k in FOUNDATIONS or k == "solve"}) == []


def test_the_check_finds_a_circle_and_sees_lazy_imports(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from featherface_tune.tuner import b\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("def f():\n    from featherface_tune.tuner.c import x\n", encoding="utf-8")
    (tmp_path / "c.py").write_text("import featherface_tune.tuner.a\n", encoding="utf-8")
    assert find_cycle(import_graph(tmp_path, module_level_only=True)) == []  # b -> c only inside f
    assert find_cycle(import_graph(tmp_path, module_level_only=False)) == ["a", "b", "c", "a"]
