"""Which optional install (pyproject's extras) brings a module, and the one line that says so.

`pip install featherface-tune` brings the budget half (count, presets, search with analytic
objectives and callables, gate, report) without torch. Whatever builds a model needs the `torch`
extra; ONNX export and onnxruntime the `deploy` extra. A command that reaches such a module without
it stops with `needs torch: pip install 'featherface-tune[torch]'` instead of a traceback.
"""

from __future__ import annotations

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


def require(module: str, what: str) -> None:
    """Import `module` now (before any work), or raise ModuleNotFoundError saying `what` needs
    which extra; the CLI prints it as one line."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        hint = missing_extra(exc) or f"needs {module}"
        raise ModuleNotFoundError(f"{what} {hint}", name=exc.name) from None
