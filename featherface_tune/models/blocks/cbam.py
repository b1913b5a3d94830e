"""CBAM (channel gate, then spatial gate) as in the official FeatherFace code (its cost:
`featherface_tune.models.arch.cbam`).

FeatherFace applies it as `relu(cbam(x) + x)`; `ResidualCBAM` is not a module of its own there, so
the model applies the residual and ReLU itself to keep the official key names.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        # Sequential indices match the official layout: mlp.1 and mlp.3 are the linears.
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # global average and max pooling (the official code pools with a kernel of the input's
        # size; a reduction is the same and exports for any input size)
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)[:, :, None, None]


class SpatialConv(nn.Module):
    """7x7 conv 2->1 (no bias) + BatchNorm(eps 1e-5, momentum 0.01), no activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, 1, 3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))
