"""Layers of the import graph, read from the source (function-level imports included, nothing is
run): `training` never imports the tuner, and the tuner imports only `training.spec` (the torch-free
run specs) at module level. Calibration, which needs both (the tuner's proof picks its configs,
training's proxy trains them), sits above them in `featherface_tune.calibration`."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_import_structure import PACKAGE_DIR, _imported_modules

TUNER = "featherface_tune.tuner"
TRAINING = "featherface_tune.training"
# proxy training needs torch by nature: the tuner imports training.proxy inside the functions that
# run (or build the pruner of) a proxy search, never at module level
TUNER_MAY_IMPORT = {f"{TRAINING}.spec"}


def _module_level_imports(path: Path) -> set[str]:
    """Modules imported by statements outside every function (a class body or an `if` counts as module
    level; `if TYPE_CHECKING:` blocks too, though they run only under the type checker)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_training_never_imports_the_tuner() -> None:
    offences = [f"{path.relative_to(PACKAGE_DIR)} imports {module}"
                for path in sorted((PACKAGE_DIR / "training").rglob("*.py"))
                for module in sorted(_imported_modules(path)) if _within(module, TUNER)]
    assert offences == []


def test_the_tuner_imports_only_the_run_specs_of_training_at_module_level() -> None:
    offences = [f"{path.relative_to(PACKAGE_DIR)} imports {module}"
                for path in sorted((PACKAGE_DIR / "tuner").rglob("*.py"))
                for module in sorted(_module_level_imports(path))
                if _within(module, TRAINING) and module != TRAINING and not any(
                    _within(module, allowed) for allowed in TUNER_MAY_IMPORT)]
    assert offences == []


def test_calibration_is_above_tuner_and_training() -> None:
    imported = _imported_modules(PACKAGE_DIR / "calibration.py")
    assert any(_within(m, TUNER) for m in imported) and any(_within(m, TRAINING) for m in imported)
    assert not (PACKAGE_DIR / "training" / "calibrate.py").exists()
    for folder in ("tuner", "training"):
        for path in sorted((PACKAGE_DIR / folder).rglob("*.py")):
            assert "featherface_tune.calibration" not in _imported_modules(path), path


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    """Each scan must be able to fail: a function-level tuner import, a module-level proxy import."""
    src = tmp_path / "x.py"
    src.write_text("import os\nif os:\n    from featherface_tune.training.proxy import run_proxy\n"
                   "def f():\n    from featherface_tune.tuner.solve import prove\n", encoding="utf-8")
    assert f"{TUNER}.solve" in _imported_modules(src)
    level = _module_level_imports(src)
    assert f"{TRAINING}.proxy" in level and f"{TUNER}.solve" not in level
