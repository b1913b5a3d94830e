"""Channel shuffle after SSH: the official block (shuffle, 1x1 down, dw 3x3, 1x1 up), shuffle only,
or nothing (its cost: `featherface_tune.models.arch.shuffle`)."""

from __future__ import annotations

import torch
from torch import nn


class ChannelShuffle(nn.Module):
    """The official `ChannelShuffle2` order: view as (B, C/g, g, H, W), swap dims 1 and 2."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels {channels} must be divisible by groups {groups}")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, c // self.groups, self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def shuffle_module(kind: str, c: int, groups: int) -> nn.Module:
    """Sequential indices match the official `sshN_cs.<i>.` keys."""
    if kind == "none":
        return nn.Identity()
    if kind == "plain":
        return nn.Sequential(ChannelShuffle(c, groups))
    h = c // 2
    return nn.Sequential(
        ChannelShuffle(c, groups),
        nn.Conv2d(c, h, 1, 1, 0, bias=False), nn.BatchNorm2d(h),
        nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h),
        nn.Conv2d(h, c, 1, 1, 0, bias=False), nn.BatchNorm2d(c),
        nn.ReLU(),
    )
