"""Channel shuffle after SSH: the official block (shuffle, 1x1 down, dw 3x3, 1x1 up), shuffle only,
or nothing; and its cost."""

from __future__ import annotations


import torch
from torch import nn

from featherface_tune.models.blocks.cost import NO_PARTS, Cost, Parts, ZERO


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


def shuffle_cost(kind: str, c: int, hw: int) -> Cost:
    if kind != "block":
        return ZERO
    h = c // 2
    # 1x1 c->h, BN h, dw 3x3 h, BN h, 1x1 h->c, BN c: no biases, so MACs = params x positions
    params = c * h + 2 * h + 9 * h + 2 * h + h * c + 2 * c
    return Cost(params, params * hw)


def shuffle_parts(kind: str, c: int, hw: int) -> Parts:
    """The block's three BatchNorms (c/2, c/2, c channels) and its closing nn.ReLU."""
    if kind != "block":
        return NO_PARTS
    bn = 2 * (c // 2) + c
    return Parts(bn_params=2 * bn, bn_macs=2 * bn * hw, relu_module_elems=c * hw)
