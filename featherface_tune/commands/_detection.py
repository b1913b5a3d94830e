"""Options and checks shared by the commands that run a detector (`predict`, `detect`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from featherface_tune.errors import InputError

CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-m", help="State dict saved by featherface-tune, the official FeatherFace code or RetinaFace, or an ONNX file from `export` (runs in onnxruntime).")]
ConfOpt = Annotated[float, typer.Option("--conf", help="Confidence threshold (scores strictly above it are kept).")]
NmsOpt = Annotated[float, typer.Option("--nms", help="NMS IoU threshold (py_cpu_nms convention).")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Best-scoring boxes that go into NMS.")]
KeepOpt = Annotated[int, typer.Option("--keep", help="Boxes kept after NMS.")]
# predict follows test_widerface.py, which has no caps (its top-k 5000 / keep 750 are commented out)
UncappedTopKOpt = Annotated[Optional[int], typer.Option("--top-k", help="Best-scoring boxes that go into NMS (default: all, as test_widerface.py; 5000 in deployment).")]
UncappedKeepOpt = Annotated[Optional[int], typer.Option("--keep", help="Boxes kept after NMS (default: all, as test_widerface.py; 750 in deployment).")]


def check_thresholds(conf: float, nms_iou: float, top_k: int | None, keep: int | None) -> None:
    if not 0.0 <= conf < 1.0:
        raise InputError(f"--conf {conf}: must be in [0, 1)")
    if not 0.0 < nms_iou <= 1.0:
        raise InputError(f"--nms {nms_iou}: must be in (0, 1]")
    if (top_k is not None and top_k < 1) or (keep is not None and keep < 1):
        raise InputError(f"--top-k {top_k} / --keep {keep}: must be positive")
