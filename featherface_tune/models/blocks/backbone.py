"""MobileNetV1 backbone (stages 1-3, as RetinaFace/FeatherFace use it) and its cost."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from featherface_tune.models.blocks.cost import Cost, Parts, conv_out
from featherface_tune.models.blocks.layers import conv_bn, conv_bn_cost, conv_dw, conv_dw_cost


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


def backbone_units(width: float, h: int, w: int):  # type: ignore[no-untyped-def]
    """(cin, cout, output positions, whether it is the full conv) of every unit, in order."""
    for si, stage in enumerate(mobilenet_plan(width)):
        for ui, (cin, cout, stride) in enumerate(stage):
            h, w = conv_out(h, 3, stride, 1), conv_out(w, 3, stride, 1)
            yield cin, cout, h * w, si == ui == 0


@lru_cache(maxsize=256)
def backbone_cost(width: float, h: int, w: int) -> Cost:
    params = macs = 0
    for cin, cout, hw, first in backbone_units(width, h, w):
        p, m = (conv_bn_cost if first else conv_dw_cost)(cin, cout, hw)
        params += p
        macs += m
    return Cost(params, macs)


@lru_cache(maxsize=256)
def backbone_parts(width: float, h: int, w: int) -> Parts:
    """BatchNorms, one per full conv (cout), two per dw unit (cin, cout), each followed by a LeakyReLU."""
    bn = bn_pos = 0
    for cin, cout, hw, first in backbone_units(width, h, w):
        c = cout if first else cin + cout
        bn += c
        bn_pos += c * hw
    return Parts(bn_params=2 * bn, bn_macs=2 * bn_pos, leaky_elems=bn_pos)


def level_sizes(h: int, w: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Spatial sizes of the stride-8/16/32 feature maps for an h x w input."""
    sizes = []
    for _ in range(5):
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        sizes.append((h, w))
    return sizes[2], sizes[3], sizes[4]
