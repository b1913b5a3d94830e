"""EfficientDet BiFPN cell (three levels, fast normalised fusion) as FeatherFace uses it (its cost:
`featherface_tune.models.arch.bifpn`).

TensorFlow-style "same" padding is reproduced exactly: padding is computed per forward from the
input size, and the downsampling max-pool pads with zeros (F.pad), as the official code does.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _same_total(n: int, k: int, s: int) -> int:
    """TensorFlow's total "same" padding (ceil(n / s) - 1) * s - n + k, written without ceil:
    ceil(n / s) * s - n is (-n) mod s. Equal for every n >= 1; the ceil-free form keeps the
    symbolic sizes of an exported graph (any input height and width) short enough to reason about."""
    return k - s + (-n) % s


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    extra_w = _same_total(w, k, s)
    extra_h = _same_total(h, k, s)
    left, top = extra_w // 2, extra_h // 2
    return F.pad(x, [left, extra_w - left, top, extra_h - top])


class SameConv(nn.Module):
    """Conv2d with TensorFlow "same" padding (stride 1 here)."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, 0, groups=groups, bias=bias)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_same_pad(x, self.k, 1))


class SameMaxPool(nn.Module):
    """3x3 stride-2 max-pool with zero "same" padding."""

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        """`size`: the output (h, w) when the caller knows it (the next level's, ceil(n / 2)). The
        same padding is then written in terms of it (left n mod 2, right 2 * out + 1 - n - left, which
        is 1), so an exported graph's output has that level's size by construction instead of a size
        expression the exporter cannot prove equal to it."""
        if size is None:
            return F.max_pool2d(_same_pad(x, 3, 2), 3, 2)
        h, w = x.shape[-2:]
        out_h, out_w = size
        if not torch.compiler.is_compiling() and (out_h, out_w) != ((h + 1) // 2, (w + 1) // 2):
            raise ValueError(f"same max-pool of {h}x{w} gives {(h + 1) // 2}x{(w + 1) // 2}, not {out_h}x{out_w}")
        left, top = w % 2, h % 2
        return F.max_pool2d(F.pad(x, [left, 2 * out_w + 1 - w - left, top, 2 * out_h + 1 - h - top]), 3, 2)


class SeparableConvBlock(nn.Module):
    """Depthwise 3x3 (no bias) + pointwise 1x1 (bias) + BatchNorm(eps 1e-3), no activation."""

    def __init__(self, c: int):
        super().__init__()
        self.depthwise_conv = SameConv(c, c, 3, groups=c, bias=False)
        self.pointwise_conv = SameConv(c, c, 1)
        self.bn = nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))


def _down_channel(cin: int, c: int) -> nn.Sequential:
    return nn.Sequential(SameConv(cin, c, 1), nn.BatchNorm2d(c, momentum=0.01, eps=1e-3))


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _fuse(w: torch.Tensor, eps: float, *xs: torch.Tensor) -> torch.Tensor:
    w = F.relu(w)
    w = w / (torch.sum(w, dim=0) + eps)
    out = w[0] * xs[0]
    for i in range(1, len(xs)):
        out = out + w[i] * xs[i]
    return _swish(out)


class BiFPNCell(nn.Module):
    """One BiFPN cell over P3/P4/P5. The first cell owns the input projections."""

    def __init__(self, c: int, in_channels: Sequence[int], first: bool, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.first = first
        self.conv4_up = SeparableConvBlock(c)
        self.conv3_up = SeparableConvBlock(c)
        self.conv4_down = SeparableConvBlock(c)
        self.conv5_down = SeparableConvBlock(c)
        self.p4_downsample = SameMaxPool()
        self.p5_downsample = SameMaxPool()
        if first:
            self.p5_down_channel = _down_channel(in_channels[2], c)
            self.p4_down_channel = _down_channel(in_channels[1], c)
            self.p3_down_channel = _down_channel(in_channels[0], c)
            self.p4_down_channel_2 = _down_channel(in_channels[1], c)
            self.p5_down_channel_2 = _down_channel(in_channels[2], c)
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(3))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        if self.first:
            p3_in, p4_in, p5_in = self.p3_down_channel(p3), self.p4_down_channel(p4), self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5
        p4_up = self.conv4_up(_fuse(self.p4_w1, self.eps, p4_in,
                                    F.interpolate(p5_in, size=p4_in.shape[-2:], mode="nearest")))
        p3_out = self.conv3_up(_fuse(self.p3_w1, self.eps, p3_in,
                                     F.interpolate(p4_up, size=p3_in.shape[-2:], mode="nearest")))
        if self.first:
            p4_in, p5_in = self.p4_down_channel_2(p4), self.p5_down_channel_2(p5)
        p4_out = self.conv4_down(_fuse(self.p4_w2, self.eps, p4_in, p4_up,
                                       self.p4_downsample(p3_out, p4_in.shape[-2:])))
        p5_out = self.conv5_down(_fuse(self.p5_w2, self.eps, p5_in,
                                       self.p5_downsample(p4_out, p5_in.shape[-2:])))
        return [p3_out, p4_out, p5_out]


class BiFPN(nn.Sequential):
    """`repeats` stacked cells; indices match the official `bifpn.<i>.` keys."""

    def __init__(self, in_channels: Sequence[int], c: int, repeats: int):
        super().__init__(*(BiFPNCell(c, in_channels, first=(i == 0)) for i in range(repeats)))
