"""MobileNetV1 backbone (stages 1-3, as RetinaFace/FeatherFace use it) and its cost."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from featherface_tune.models.blocks.cost import NO_PARTS, Cost, Parts, conv_out
from featherface_tune.models.blocks.layers import (
    bn_parts, conv_bn, conv_bn_cost, conv_dw, conv_dw_cost, conv_dw_parts,
)


def mobilenet_plan(width: float) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """(cin, cout, stride) of every unit per stage; the first unit of stage 1 is the full conv."""
    m = round(width * 32)  # channels per 1/32 of width: 8 at width 0.25
    c = lambda base: base * m // 32  # noqa: E731 - exact for width multiples of 1/32
    stage1 = ((3, c(32), 2), (c(32), c(64), 1), (c(64), c(128), 2), (c(128), c(128), 1),
              (c(128), c(256), 2), (c(256), c(256), 1))
    stage2 = ((c(256), c(512), 2),) + ((c(512), c(512), 1),) * 5
    stage3 = ((c(512), c(1024), 2), (c(1024), c(1024), 1))
    return stage1, stage2, stage3


class MobileNetV1Body(nn.Module):
    """Stages 1-3 of MobileNetV1; returns the three stage outputs (strides 8, 16, 32)."""

    def __init__(self, width: float = 0.25):
        super().__init__()
        s1, s2, s3 = mobilenet_plan(width)
        first = conv_bn(*s1[0][:2], stride=s1[0][2], leaky=0.1)
        self.stage1 = nn.Sequential(first, *(conv_dw(a, b, s) for a, b, s in s1[1:]))
        self.stage2 = nn.Sequential(*(conv_dw(a, b, s) for a, b, s in s2))
        self.stage3 = nn.Sequential(*(conv_dw(a, b, s) for a, b, s in s3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


@lru_cache(maxsize=256)
def backbone_cost(width: float, h: int, w: int) -> Cost:
    return backbone_cost_parts(width, h, w)[0]


@lru_cache(maxsize=256)
def backbone_cost_parts(width: float, h: int, w: int) -> tuple[Cost, Parts]:
    """The backbone's Cost and its Parts (BatchNorms only: no biases, no DCN), in one walk."""
    params = macs = 0
    parts = NO_PARTS
    for si, stage in enumerate(mobilenet_plan(width)):
        for ui, (cin, cout, stride) in enumerate(stage):
            h, w = conv_out(h, 3, stride, 1), conv_out(w, 3, stride, 1)
            first = si == ui == 0
            p, m = (conv_bn_cost if first else conv_dw_cost)(cin, cout, h * w)
            params += p
            macs += m
            parts += bn_parts(cout, h * w) if first else conv_dw_parts(cin, cout, h * w)
    return Cost(params, macs), parts


def level_sizes(h: int, w: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Spatial sizes of the stride-8/16/32 feature maps for an h x w input."""
    sizes = []
    for _ in range(5):
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        sizes.append((h, w))
    return sizes[2], sizes[3], sizes[4]
