"""SSH context module (3x3 / 5x5 / 7x7 branches by stacked 3x3 convs), plain or deformable
(its cost: `featherface_tune.models.arch.ssh`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featherface_tune.models.blocks.deform import DeformableConv2d


def _unit(cin: int, cout: int, deformable: bool, leaky: float | None) -> nn.Sequential:
    conv: nn.Module = (DeformableConv2d(cin, cout, 3, 1, 1) if deformable
                       else nn.Conv2d(cin, cout, 3, 1, 1, bias=False))
    layers = [conv, nn.BatchNorm2d(cout)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


class SSH(nn.Module):
    """Output = relu(cat(3x3 -> out/2, 5x5 -> out/4, 7x7 -> out/4)); out must be a multiple of 4."""

    def __init__(self, cin: int, cout: int, deformable: bool = True):
        super().__init__()
        if cout % 4:
            raise ValueError(f"SSH width {cout} must be a multiple of 4")
        leaky = 0.1 if cout <= 64 else 0.0
        q = cout // 4
        self.conv3X3 = _unit(cin, cout // 2, deformable, None)
        self.conv5X5_1 = _unit(cin, q, deformable, leaky)
        self.conv5X5_2 = _unit(q, q, deformable, None)
        self.conv7X7_2 = _unit(q, q, deformable, leaky)
        self.conv7x7_3 = _unit(q, q, deformable, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.conv3X3(x)
        c5_1 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([c3, c5, c7], dim=1))
