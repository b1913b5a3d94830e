"""Prior (anchor) boxes, RetinaFace layout: per level, row-major cells, then anchors per cell."""

from __future__ import annotations

import math

import torch

from featherface_tune.models import arch

STEPS = (8, 16, 32)
BASE_SIZES = (16, 64, 256)  # smallest anchor of each level; RetinaFace uses [[16,32],[64,128],[256,512]]


def min_sizes(anchors_per_cell: int) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes per level: for 2 anchors RetinaFace's [s, 2s]; otherwise geometric from s to 2s."""
    out: list[tuple[int, ...]] = []
    for s in BASE_SIZES:
        if anchors_per_cell == 1:
            out.append((round(s * math.sqrt(2)),))
        else:
            n = anchors_per_cell - 1
            out.append(tuple(round(s * 2 ** (i / n)) for i in range(anchors_per_cell)))
    return tuple(out)


def feature_maps(h: int, w: int) -> list[tuple[int, int]]:
    """The (height, width) of the P3, P4, P5 maps the heads run on: the architecture's level sizes
    (ceil(h / step) each, as RetinaFace computes its priors)."""
    return list(arch.sizes(h, w).levels)


def num_priors(h: int, w: int, anchors_per_cell: int) -> int:
    return sum(fh * fw for fh, fw in feature_maps(h, w)) * anchors_per_cell


def prior_boxes(h: int, w: int, anchors_per_cell: int = 2) -> torch.Tensor:
    """[N, 4] priors as (cx, cy, w, h), normalised by the image size."""
    out = []
    for (fh, fw), step, sizes in zip(feature_maps(h, w), STEPS, min_sizes(anchors_per_cell)):
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * step / h
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * step / w
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        a = len(sizes)
        centers = torch.stack((gx, gy), -1).reshape(-1, 1, 2).expand(-1, a, 2)
        wh = torch.tensor([[s / w, s / h] for s in sizes], dtype=torch.float64).expand(fh * fw, a, 2)
        out.append(torch.cat((centers, wh), -1).reshape(-1, 4))
    return torch.cat(out).float()
