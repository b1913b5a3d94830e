"""Prior matching and target encoding (RetinaFace utils/box_utils.py: match, encode, encode_landm).
Decoding, the inverse, is `featherface_tune.inference.decode`, shared with prediction.

Priors are (cx, cy, w, h) normalised, in the model's output order (models.priors.prior_boxes).
Ground truth is the augmented targets: [n, 15] = x1 y1 x2 y2, 5 landmarks x y, label (1 with
landmarks, -1 without), all normalised to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from featherface_tune.inference.decode import VARIANCES
from featherface_tune.models.priors import prior_boxes

MATCH_THRESHOLD = 0.35
HARD_GT_THRESHOLD = 0.2  # a face whose best prior overlaps it less than this is not forced a prior


def make_priors(image_size: int, anchors_per_cell: int = 2) -> torch.Tensor:
    """Priors for a square training image: min_sizes [[16,32],[64,128],[256,512]], steps [8,16,32]."""
    return prior_boxes(image_size, image_size, anchors_per_cell)


def point_form(priors: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[A, B] IoU of corner boxes (continuous convention, as RetinaFace's jaccard)."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return inter / (area_a + area_b - inter)


def encode(matched: torch.Tensor, priors: torch.Tensor,
           variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """Corner boxes [P, 4] -> regression targets relative to their priors [P, 4]."""
    g_cxcy = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
    g_wh = torch.log((matched[:, 2:] - matched[:, :2]) / priors[:, 2:]) / variances[1]
    return torch.cat((g_cxcy, g_wh), 1)


def encode_landm(matched: torch.Tensor, priors: torch.Tensor,
                 variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """Landmarks [P, 10] -> offsets from the prior centre in units of variance0 * prior size."""
    pts = matched.reshape(-1, 5, 2)
    out = (pts - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return out.reshape(-1, 10)


@dataclass(frozen=True)
class MatchTargets:
    """Per-prior targets for a batch. labels: 1 face, 0 background; has_landmarks: face priors whose
    face has landmarks; loc [B, P, 4] and landmarks [B, P, 10] are valid where labels == 1 (resp.
    has_landmarks)."""

    loc: torch.Tensor
    labels: torch.Tensor
    landmarks: torch.Tensor
    has_landmarks: torch.Tensor


def match_one(truths: torch.Tensor, priors: torch.Tensor, threshold: float = MATCH_THRESHOLD,
              variances: tuple[float, float] = VARIANCES, official: bool = False) -> tuple[torch.Tensor, ...]:
    """RetinaFace's match for one image.

    Each prior takes the face of highest IoU; a face's best prior is forced to it (overlap set to 2)
    unless that best IoU is below 0.2 ("hard" face, not forced); priors below `threshold` are
    background. When two faces share a best prior, the later face wins (RetinaFace's loop order).
    RetinaFace's loop also re-points the best prior of an ignored hard face to it (without forcing its
    overlap): with `official` so does this (the official recipe), else such priors are left alone.
    Returns loc [P, 4], labels [P] (long, 1/0), landmarks [P, 10], has_landmarks [P] (bool).
    """
    p = priors.shape[0]
    dev = priors.device
    # a zero-size (or inverted) box overlaps no prior, so it can never be matched: drop it up front
    truths = truths[(truths[:, 2] > truths[:, 0]) & (truths[:, 3] > truths[:, 1])]

    def nothing() -> tuple[torch.Tensor, ...]:  # every prior background, no landmarks
        return (torch.zeros(p, 4, device=dev), torch.zeros(p, dtype=torch.long, device=dev),
                torch.zeros(p, 10, device=dev), torch.zeros(p, dtype=torch.bool, device=dev))

    if truths.shape[0] == 0:
        return nothing()
    boxes = truths[:, :4]
    overlaps = iou(boxes, point_form(priors))  # [n, P]
    best_prior_overlap, best_prior_idx = overlaps.max(1)
    valid = best_prior_overlap >= HARD_GT_THRESHOLD
    if not bool(valid.any()):
        return nothing()
    best_truth_overlap, best_truth_idx = overlaps.max(0)
    faces = torch.arange(truths.shape[0], device=dev)
    best_truth_overlap = best_truth_overlap.index_fill(0, best_prior_idx[valid], 2.0)
    repointed = torch.ones_like(valid) if official else valid
    # later faces win on a shared best prior: scatter the max face index (deterministic)
    winner = torch.full((p,), -1, dtype=torch.long, device=dev)
    winner = winner.scatter_reduce(0, best_prior_idx[repointed], faces[repointed], reduce="amax")
    best_truth_idx = torch.where(winner >= 0, winner, best_truth_idx)
    labels = (best_truth_overlap >= threshold).long()
    pos = labels.bool()
    loc = torch.zeros(p, 4, device=dev)
    ldm = torch.zeros(p, 10, device=dev)
    idx = best_truth_idx[pos]
    loc[pos] = encode(boxes[idx], priors[pos], variances)
    has = torch.zeros(p, dtype=torch.bool, device=dev)
    face_has = truths[:, 14] > 0
    has[pos] = face_has[idx]
    if bool(has.any()):
        ldm[has] = encode_landm(truths[best_truth_idx[has], 4:14], priors[has], variances)
    return loc, labels, ldm, has


def match(targets: list[torch.Tensor], priors: torch.Tensor, threshold: float = MATCH_THRESHOLD,
          variances: tuple[float, float] = VARIANCES, official: bool = False) -> MatchTargets:
    """Match every image of a batch (vectorised within an image; a face count can reach ~2000)."""
    parts = [match_one(t.to(priors.device), priors, threshold, variances, official) for t in targets]
    loc, labels, ldm, has = (torch.stack(x) for x in zip(*parts))
    return MatchTargets(loc=loc, labels=labels, landmarks=ldm, has_landmarks=has)
