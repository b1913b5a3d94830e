"""Deployment: ONNX export (`export.py`), running an exported model in onnxruntime (`runtime.py`) and
latency measured in onnxruntime or PyTorch (`latency.py`).

onnx, onnxscript and onnxruntime come with the optional `deploy` extra and are imported only when
needed (`extras.require`): without them every other command works, and these give a one-line error
naming the extra.
"""

from __future__ import annotations

import importlib


def onnxruntime_available() -> bool:
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True
