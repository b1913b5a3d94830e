"""RetinaFace FPN neck and its cost."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from featherface_tune.models.blocks.cost import Cost, Parts, upsample
from featherface_tune.models.blocks.layers import (
    conv_bn, conv_bn1x1, conv_bn1x1_cost, conv_bn_cost,
)


class FPN(nn.Module):
    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels[0], out_channels, leaky)
        self.output2 = conv_bn1x1(in_channels[1], out_channels, leaky)
        self.output3 = conv_bn1x1(in_channels[2], out_channels, leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


@lru_cache(maxsize=1024)
def fpn_cost(in_channels: tuple[int, int, int], c: int, hw3: int, hw4: int, hw5: int) -> Cost:
    lat = (conv_bn1x1_cost(in_channels[0], c, hw3) + conv_bn1x1_cost(in_channels[1], c, hw4)
           + conv_bn1x1_cost(in_channels[2], c, hw5))
    merge = conv_bn_cost(c, c, hw4) + conv_bn_cost(c, c, hw3)
    return lat + merge + upsample(c, hw4) + upsample(c, hw3)


def fpn_parts(in_channels: tuple[int, int, int], c: int, hw3: int, hw4: int, hw5: int) -> Parts:
    """Five BatchNorms + LeakyReLUs of c channels (laterals at P3/P4/P5, merges at P4/P3), two
    upsamplings."""
    positions = hw3 + hw4 + hw5 + hw4 + hw3
    return Parts(bn_params=10 * c, bn_macs=2 * c * positions, upsample_macs=c * (hw4 + hw3),
                 leaky_elems=c * positions)
