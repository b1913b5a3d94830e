"""Greedy non-maximum suppression exactly as RetinaFace's `py_cpu_nms`.

Conventions of `py_cpu_nms` (Fast R-CNN): boxes are inclusive pixel ranges, so a box's width is
x2 - x1 + 1 (likewise heights and intersections); a box is suppressed when its IoU with a kept box is
strictly greater than the threshold; everything runs in float32. Ties in score: by default in the
official order, `scores.argsort()[::-1]` (numpy's default sort, reversed, as `py_cpu_nms` and
`test_widerface.py` sort), so equal scores come out as the official script's do; `ties="stable"`
keeps their input order instead.

`torchvision.ops.nms` computes IoU without the +1; fed boxes whose x2 and y2 are shifted by +1 it
computes the same quantity, so it is used (on those shifted boxes) when torchvision imports and
`backend="auto"`. The plain implementation is always available and is the reference.
"""

from __future__ import annotations

import numpy as np
import torch

try:  # torchvision does not import on every machine; never require it
    from torchvision.ops import nms as _tv_nms  # type: ignore
except Exception:  # pragma: no cover - depends on the machine
    _tv_nms = None

BACKENDS = ("plain",) + (("torchvision",) if _tv_nms is not None else ())
TIES = ("official", "stable")


def descending(scores: np.ndarray, ties: str = "official") -> np.ndarray:
    """Indices that sort `scores` best first: numpy's default argsort reversed (the official code's
    order of equal scores) or a stable sort (equal scores in input order)."""
    if ties not in TIES:
        raise ValueError(f"ties {ties!r}: must be one of {', '.join(TIES)}")
    s = np.asarray(scores, dtype=np.float32)
    return np.argsort(s)[::-1].copy() if ties == "official" else np.argsort(-s, kind="stable")


@np.errstate(over="ignore", invalid="ignore")  # an untrained model's inf boxes: dropped, not warned about
def nms_plain(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, ties: str = "official") -> np.ndarray:
    """Indices of the kept boxes, in descending score order (the `py_cpu_nms` algorithm)."""
    b = np.asarray(boxes, dtype=np.float32)
    s = np.asarray(scores, dtype=np.float32)
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    one = np.float32(1)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = descending(s, ties)
    thr = np.float32(iou_threshold)
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        w = np.maximum(np.float32(0), xx2 - xx1 + one)
        h = np.maximum(np.float32(0), yy2 - yy1 + one)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= thr]
    return np.asarray(keep, dtype=np.int64)


def backend_for(device: torch.device | str) -> str:
    """The NMS backend inference uses on `device`: torchvision's kernel on a GPU when it imports
    (the plain loop would copy boxes to the host), the plain reference on the CPU."""
    return "auto" if torch.device(device).type == "cuda" else "plain"


def nms(boxes: torch.Tensor | np.ndarray, scores: torch.Tensor | np.ndarray, iou_threshold: float,
        backend: str = "plain", ties: str = "official") -> torch.Tensor:
    """Kept indices (int64 tensor, descending score). backend: "plain" (default, exact
    `py_cpu_nms`), "torchvision" (shifted-box torchvision kernel) or "auto" (torchvision if it
    imports)."""
    if backend == "auto":
        backend = "torchvision" if _tv_nms is not None else "plain"
    if backend not in BACKENDS:
        raise ValueError(f"NMS backend {backend!r} unavailable; available: {', '.join(BACKENDS)}")
    if backend == "torchvision":  # pragma: no cover - needs torchvision
        b = torch.as_tensor(boxes, dtype=torch.float32).clone()
        b[:, 2:] += 1
        return _tv_nms(b, torch.as_tensor(scores, dtype=torch.float32), float(iou_threshold))
    b_np = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else boxes
    s_np = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores
    return torch.from_numpy(nms_plain(b_np, s_np, iou_threshold, ties))
