"""RetinaFace box and landmark decoding (`utils/box_utils.py` decode / decode_landm)."""

from __future__ import annotations

from typing import Sequence

import torch

VARIANCES: tuple[float, float] = (0.1, 0.2)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor,
                 variances: Sequence[float] = VARIANCES) -> torch.Tensor:
    """[N, 4] regression offsets + [N, 4] priors (cx, cy, w, h) -> [N, 4] corners (x1, y1, x2, y2),
    in the priors' (normalised) units:
    centre = prior_c + loc_c * v0 * prior_wh, size = prior_wh * exp(loc_wh * v1)."""
    centre = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    x1y1 = centre - size / 2
    return torch.cat((x1y1, x1y1 + size), dim=1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor,
                     variances: Sequence[float] = VARIANCES) -> torch.Tensor:
    """[N, 10] landmark offsets -> [N, 10] points (x1, y1, ..., x5, y5): prior_c + pre * v0 * prior_wh."""
    n = pre.shape[0]
    pts = priors[:, None, :2] + pre.reshape(n, 5, 2) * variances[0] * priors[:, None, 2:]
    return pts.reshape(n, 10)
