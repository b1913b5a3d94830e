"""Import structure: commands never import each other, and the deploy reader does not import the
exporter. Imports are read from the source (function-level ones included), nothing is run."""

from __future__ import annotations

import ast
from pathlib import Path

import featherface_tune

PACKAGE_DIR = Path(featherface_tune.__file__).parent
COMMANDS_DIR = PACKAGE_DIR / "commands"
PREFIX = "featherface_tune.commands."


def _imported_modules(path: Path) -> set[str]:
    """Every module a file of the package imports, at module level or inside functions."""
    package = ["featherface_tune", *path.resolve().relative_to(PACKAGE_DIR.resolve()).parent.parts] \
        if path.resolve().is_relative_to(PACKAGE_DIR.resolve()) else ["featherface_tune"]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            # `from featherface_tune.commands import predict` imports a module too
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_command_module_imports_another_command_module() -> None:
    """Shared code lives in the package proper or in the layer's helper modules (_common, _typer,
    _tables, _detection: leading underscore); a command importing another command module would
    make one command's code the other's library."""
    offences = []
    for path in sorted(COMMANDS_DIR.glob("*.py")):
        for module in sorted(_imported_modules(path)):
            if module.startswith(PREFIX):
                name = module[len(PREFIX):].split(".")[0]
                if not name.startswith("_") and name != path.stem:
                    offences.append(f"{path.name} imports {module}")
    assert offences == []


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    """The scan must catch an import hidden inside a function body (the old export -> predict one)."""
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from featherface_tune.commands.predict import predict_cmd\n", encoding="utf-8")
    assert "featherface_tune.commands.predict" in _imported_modules(src)


def test_the_onnx_reader_does_not_import_the_exporter() -> None:
    """deploy.export imports deploy.runtime (to verify what it wrote); the other direction made a
    circle. What both need (the metadata keys) is in deploy.metadata."""
    for name in ("runtime", "metadata", "postprocess"):
        imported = _imported_modules(PACKAGE_DIR / "deploy" / f"{name}.py")
        assert "featherface_tune.deploy.export" not in imported, name
    assert "featherface_tune.deploy.runtime" in _imported_modules(PACKAGE_DIR / "deploy" / "export.py")


def _module_name(path: Path) -> str:
    parts = ["featherface_tune", *path.resolve().relative_to(PACKAGE_DIR.resolve()).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (function-level imports included; the package
    root's TYPE_CHECKING block too, which only type checkers run)."""
    files = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    return {m: {i for i in _imported_modules(p) if i in files and i != m} for m, p in files.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def test_nothing_in_the_package_imports_its_root() -> None:
    """The root lazily re-exports the notebook API (tuner, counter, deploy, ...): a module importing
    the root (`from featherface_tune import __version__`) closed a circle through all of them
    (root -> deploy.latency_table -> deploy.export -> root). The version lives in `_version`."""
    graph = _import_graph()
    importers = sorted(m for m, imported in graph.items() if "featherface_tune" in imported)
    assert importers == []
    assert not _reaches(graph, "featherface_tune.deploy.export", "featherface_tune")


def test_the_reach_check_follows_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _reaches(graph, "a", "c") and _reaches(graph, "c", "a") and not _reaches(graph, "a", "d")
