"""Single-image face detection in the RetinaFace test convention.

RetinaFace/FeatherFace test code (`test_widerface.py`, `detect.py`): the image is read as BGR
(cv2), converted to float, the means (104, 117, 123) are subtracted, it is fed at its original size
(no scaling, no normalisation by std), the class logits go through a softmax, priors are generated
for that size, boxes and landmarks are decoded with variances [0.1, 0.2] and scaled to pixels, scores
above the confidence threshold (strictly) are kept, sorted by score, go to NMS (IoU 0.4), and every
survivor is returned: `test_widerface.py` has its top-k 5000 / keep 750 caps commented out. The caps
stay available (`top_k`, `keep`) for deployment, where a crowd of 1,900 boxes is rarely wanted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from featherface_tune.data.images import MEANS_BGR
from featherface_tune.errors import InputError
from featherface_tune.inference.decode import VARIANCES, decode_boxes, decode_landmarks
from featherface_tune.inference.nms import descending, nms
from featherface_tune.models.priors import num_priors

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, best first. Pixel coordinates of the input image."""

    boxes: np.ndarray  # [K, 4] float32 x1, y1, x2, y2
    scores: np.ndarray  # [K] float32
    landmarks: np.ndarray | None  # [K, 10] float32 x1, y1, ..., x5, y5 (eyes, nose, mouth corners)
    image_size: tuple[int, int]  # (height, width)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def above(self, threshold: float) -> "Detections":
        """Only detections with score >= threshold (RetinaFace's visualisation rule)."""
        m = self.scores >= threshold
        return Detections(self.boxes[m], self.scores[m],
                          None if self.landmarks is None else self.landmarks[m], self.image_size)

    def to_json(self) -> list[dict[str, Any]]:
        out = []
        for i in range(len(self)):
            d: dict[str, Any] = {"box": [round(float(v), 2) for v in self.boxes[i]],
                                 "score": float(self.scores[i])}
            if self.landmarks is not None:
                pts = self.landmarks[i].reshape(5, 2)
                d["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in pts]
            out.append(d)
        return out


def preprocess(image_bgr: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 BGR -> [1, 3, H, W] float32, means subtracted, no scaling."""
    img = np.asarray(image_bgr)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"expected an HxWx3 BGR image, got an array of shape {tuple(img.shape)}")
    x = img.astype(np.float32) - np.asarray(MEANS_BGR, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


@lru_cache(maxsize=32)
def _priors(h: int, w: int, anchors: int) -> torch.Tensor:
    from featherface_tune.models.priors import prior_boxes

    return prior_boxes(h, w, anchors)


def postprocess(loc: torch.Tensor, logits: torch.Tensor, ldm: torch.Tensor | None,
                image_size: tuple[int, int], anchors_per_cell: int, conf: float = 0.02,
                nms_iou: float = 0.4, top_k: int | None = None, keep: int | None = None,
                nms_backend: str = "plain", ties: str = "official") -> Detections:
    """Network outputs of one image ([N, 4], [N, 2] logits, [N, 10] or None) -> Detections."""
    h, w = image_size
    priors = _priors(h, w, anchors_per_cell).to(loc.device)
    if priors.shape[0] != loc.shape[0]:
        raise ValueError(f"{loc.shape[0]} predictions but {priors.shape[0]} priors for a {h}x{w} "
                         f"image with {anchors_per_cell} anchors per cell")
    scores = torch.softmax(logits.float(), dim=-1)[:, 1]
    idx = torch.nonzero(scores > conf).flatten()
    s = scores[idx]
    # best first, equal scores in the official script's order (inference.nms.descending)
    order = torch.from_numpy(descending(s.cpu().numpy(), ties)).to(s.device)[: None if top_k is None else max(top_k, 0)]
    idx, s = idx[order], s[order]
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=loc.device)
    boxes = decode_boxes(loc[idx].float(), priors[idx], VARIANCES) * scale
    pts = None
    if ldm is not None:
        pts = decode_landmarks(ldm[idx].float(), priors[idx], VARIANCES) * scale[:2].repeat(5)
    kept = nms(boxes, s, nms_iou, backend=nms_backend, ties=ties)[: None if keep is None else max(keep, 0)]
    return Detections(
        boxes[kept].cpu().numpy().astype(np.float32),
        s[kept].cpu().numpy().astype(np.float32),
        None if pts is None else pts[kept].cpu().numpy().astype(np.float32),
        (h, w),
    )


@torch.no_grad()
def detect(model: nn.Module, image_bgr: np.ndarray, conf: float = 0.02, nms_iou: float = 0.4,
           top_k: int | None = None, keep: int | None = None, nms_backend: str = "plain") -> Detections:
    """Detect faces in one HxWx3 uint8 BGR image at its original size (RetinaFace convention).

    The model runs in eval mode (its previous mode is restored afterwards), on the device of its
    parameters. An ONNX model loaded with `featherface_tune.deploy.runtime.OnnxModel` runs in
    onnxruntime with the same pre- and post-processing.
    """
    if not isinstance(model, nn.Module):  # an exported model (featherface_tune.deploy.runtime.OnnxModel)
        return model.detect(image_bgr, conf, nms_iou, top_k, keep, nms_backend)
    return detect_batch(model, [image_bgr], conf, nms_iou, top_k, keep, nms_backend)[0]


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters live (the CPU for a model without any)."""
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def detect_batch(model: nn.Module, images_bgr: list[np.ndarray], conf: float = 0.02, nms_iou: float = 0.4,
                 top_k: int | None = None, keep: int | None = None,
                 nms_backend: str = "plain") -> list[Detections]:
    """detect() for images of one size in a single forward pass (a GPU's batch); same results as
    one call per image up to float rounding (the batch changes the kernels' summation order)."""
    xs = [preprocess(img) for img in images_bgr]
    h, w = xs[0].shape[-2:]
    if any(x.shape[-2:] != (h, w) for x in xs):
        raise ValueError("detect_batch needs images of one size; group them by shape first")
    device = model_device(model)
    x = torch.cat(xs).to(device, non_blocking=device.type == "cuda")
    was_training = model.training
    model.eval()
    try:
        loc, logits, ldm = model(x)
    finally:
        model.train(was_training)
    anchors = getattr(getattr(model, "config", None), "anchors_per_cell", None)
    if anchors is None:
        anchors = logits.shape[1] // num_priors(int(h), int(w), 1)
    return [postprocess(loc[i], logits[i], None if ldm is None else ldm[i], (int(h), int(w)),
                        int(anchors), conf, nms_iou, top_k, keep, nms_backend)
            for i in range(len(xs))]
