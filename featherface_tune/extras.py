"""Which optional install (pyproject's extras) brings a module, and the one line that says so.

`pip install featherface-tune` brings the budget half (count, presets, search with analytic
objectives and callables, gate, report) without torch. Whatever builds a model needs the `torch`
extra; ONNX export and onnxruntime the `deploy` extra. A command that reaches such a module without
it stops with `needs torch: pip install 'featherface-tune[torch]'` instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from featherface_tune.errors import FeatherFaceError

# top-level module -> (what to call it, the extra that installs it)
EXTRA_OF = {
    "torch": ("torch", "torch"),
    "fvcore": ("torch", "torch"),
    "scipy": ("scipy", "torch"),
    "cv2": ("OpenCV", "torch"),
    "onnx": ("onnx", "deploy"),
    "onnxscript": ("onnxscript", "deploy"),
    "onnxruntime": ("onnxruntime", "deploy"),
}


def install_hint(module: str) -> str:
    """`needs torch: pip install 'featherface-tune[torch]'` for a module an extra brings."""
    what, extra = EXTRA_OF[module.split(".")[0]]
    return f"needs {what}: pip install 'featherface-tune[{extra}]'"


def missing_extra(exc: BaseException) -> str | None:
    """The install hint when `exc` is an ImportError of a module an extra brings, else None."""
    if not isinstance(exc, ImportError):
        return None
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return install_hint(name) if name in EXTRA_OF else None


class MissingExtra(FeatherFaceError, ModuleNotFoundError):
    """An optional install is missing: one line naming what needs it and the extra to install. Exit
    code 1 (the machine lacks something; the command line was fine)."""

    exit_code = 1


def require(module: str, what: str) -> ModuleType:
    """Import `module` now (before any work) and return it, or raise MissingExtra saying that `what`
    needs it and which extra brings it (`ONNX export needs onnxruntime: pip install ...`)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        hint = missing_extra(exc) or (install_hint(module) if module.split(".")[0] in EXTRA_OF else f"needs {missing}")
        error = MissingExtra(f"{what} {hint}")
        error.name = missing
        raise error from None
