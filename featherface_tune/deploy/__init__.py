"""Deployment: ONNX export (`export.py`), running an exported model in onnxruntime (`runtime.py`) and
latency measured in onnxruntime or PyTorch (`latency.py`).

onnx, onnxscript and onnxruntime come with the optional `deploy` extra and are imported only when
needed: without them every other command works, and these give a one-line error naming the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from featherface_tune.errors import InputError

EXTRA = 'pip install "featherface-tune[deploy]"'
DEPLOY_MODULES = ("onnx", "onnxscript", "onnxruntime")


def require(module: str, what: str) -> ModuleType:
    """Import one of the deploy extra's modules, or raise a one-line InputError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs the deploy extra ({', '.join(DEPLOY_MODULES)}); {module} is not "
                         f"installed: {EXTRA}") from None


def onnxruntime_available() -> bool:
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True
