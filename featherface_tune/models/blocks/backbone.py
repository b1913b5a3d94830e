"""MobileNetV1 backbone (stages 1-3, as RetinaFace/FeatherFace use it); its plan and cost are in
`featherface_tune.models.arch.backbone`."""

from __future__ import annotations

import torch
from torch import nn

from featherface_tune.models.arch.backbone import mobilenet_plan
from featherface_tune.models.blocks.layers import conv_bn, conv_dw


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
