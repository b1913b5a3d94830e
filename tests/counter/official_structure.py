"""A model with the official FeatherFace code's *module structure* for any config, for running the
real counting tools (thop, torchinfo, ptflops, fvcore, FlopCounterMode) against the conventions.

What counting tools see is mirrored, not the code: which modules are leaves, which run, which
parameters sit on non-leaf modules, which ops are functional. As in the official code: the
deformable conv's main weight goes through one opaque op (torchvision's `deform_conv2d` there; a
custom op with no decomposition here), BiFPN fusion weights are parameters of the cell with `nn.ReLU`
modules and a `Swish` module applying them, downsampling is an `nn.MaxPool2d` module, CBAM's channel
pooling is a `ChannelPool` module and its residual ReLUs are modules, upsampling is `F.interpolate`.
A plain SSH and the FPN neck follow RetinaFace, which the official code was forked from. Blocks whose
structure is the same in both (MobileNetV1, separable convs, projections, shuffle, heads) are this
project's own.
"""

from __future__ import annotations

import torch
import torch._dynamo  # noqa: F401 - custom ops load it on first call; ptflops' patched F.* breaks that import
import torch.nn.functional as F
from torch import nn

from featherface_tune.models.blocks.backbone import MobileNetV1Body
from featherface_tune.models.blocks.bifpn import SeparableConvBlock, _down_channel, _same_pad
from featherface_tune.models.blocks.fpn import FPN
from featherface_tune.models.blocks.heads import Head
from featherface_tune.models.blocks.shuffle import shuffle_module
from featherface_tune.models.config import FeatherFaceConfig


@torch.library.custom_op("featherface_tune_test::opaque_deform_conv2d", mutates_args=())
def opaque_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                         weight: torch.Tensor) -> torch.Tensor:
    """One opaque op, as torchvision's C++ kernel is: nothing inside it is visible to tools that hook
    modules, patch torch functions (ptflops) or intercept dispatch. It computes the DCN in the state
    the official code starts in and counting runs use (offset and modulator convs at zero: offsets 0,
    mask 1), i.e. the plain 3x3 conv; F.conv2d is neither a module nor patched."""
    return F.conv2d(x, weight, padding=1)


@opaque_deform_conv2d.register_fake
def _(x, offset, mask, weight):  # type: ignore[no-untyped-def]
    return x.new_empty(x.shape[0], weight.shape[0], *offset.shape[-2:])


class DeformableConv2d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.offset_conv = nn.Conv2d(cin, 18, 3, 1, 1, bias=True)
        self.modulator_conv = nn.Conv2d(cin, 9, 3, 1, 1, bias=True)
        self.regular_conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        for conv in (self.offset_conv, self.modulator_conv):  # as the official code initialises them
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return opaque_deform_conv2d(x, self.offset_conv(x), mask, self.regular_conv.weight)


class SSH(nn.Module):
    def __init__(self, cin: int, cout: int, deformable: bool):
        super().__init__()
        q, leaky = cout // 4, (0.1 if cout <= 64 else 0.0)

        def unit(a: int, b: int, relu: bool) -> nn.Sequential:
            conv = DeformableConv2d(a, b) if deformable else nn.Conv2d(a, b, 3, 1, 1, bias=False)
            tail = [nn.LeakyReLU(leaky, inplace=True)] if relu else []
            return nn.Sequential(conv, nn.BatchNorm2d(b), *tail)

        self.conv3X3, self.conv5X5_1, self.conv5X5_2 = unit(cin, cout // 2, False), unit(cin, q, True), unit(q, q, False)
        self.conv7X7_2, self.conv7x7_3 = unit(q, q, True), unit(q, q, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        out = [self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))]
        return F.relu(torch.cat(out, dim=1))


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SamePadMaxPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(_same_pad(x, 3, 2))


class BiFPNCell(nn.Module):
    def __init__(self, c: int, in_channels: tuple[int, int, int], first: bool):
        super().__init__()
        self.first = first
        self.conv4_up, self.conv3_up, self.conv4_down, self.conv5_down = (SeparableConvBlock(c) for _ in range(4))
        self.p4_downsample, self.p5_downsample = SamePadMaxPool(), SamePadMaxPool()
        self.swish = Swish()
        if first:
            c3, c4, c5 = in_channels
            self.p5_down_channel, self.p4_down_channel, self.p3_down_channel = (
                _down_channel(c5, c), _down_channel(c4, c), _down_channel(c3, c))
            self.p4_down_channel_2, self.p5_down_channel_2 = _down_channel(c4, c), _down_channel(c5, c)
        for name, k in (("p4_w1", 2), ("p3_w1", 2), ("p4_w2", 3), ("p5_w2", 3)):
            setattr(self, name, nn.Parameter(torch.ones(k)))
            setattr(self, name + "_relu", nn.ReLU())

    def _weights(self, name: str) -> torch.Tensor:
        w = getattr(self, name + "_relu")(getattr(self, name))
        return w / (torch.sum(w, dim=0) + 1e-4)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        p3_in, p4_in, p5_in = ((self.p3_down_channel(p3), self.p4_down_channel(p4), self.p5_down_channel(p5))
                               if self.first else (p3, p4, p5))
        w = self._weights("p4_w1")
        p4_up = self.conv4_up(self.swish(w[0] * p4_in + w[1] * F.interpolate(p5_in, size=p4_in.shape[-2:])))
        w = self._weights("p3_w1")
        p3_out = self.conv3_up(self.swish(w[0] * p3_in + w[1] * F.interpolate(p4_up, size=p3_in.shape[-2:])))
        if self.first:
            p4_in, p5_in = self.p4_down_channel_2(p4), self.p5_down_channel_2(p5)
        w = self._weights("p4_w2")
        p4_out = self.conv4_down(self.swish(w[0] * p4_in + w[1] * p4_up + w[2] * self.p4_downsample(p3_out)))
        w = self._weights("p5_w2")
        p5_out = self.conv5_down(self.swish(w[0] * p5_in + w[1] * self.p5_downsample(p4_out)))
        return [p3_out, p4_out, p5_out]


class ChannelGate(nn.Module):
    def __init__(self, c: int, r: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        att = self.mlp(F.avg_pool2d(x, size, stride=size)) + self.mlp(F.max_pool2d(x, size, stride=size))
        return x * torch.sigmoid(att)[:, :, None, None]


class ChannelPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)), dim=1)


class BasicConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, 1, 3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.compress, self.spatial = ChannelPool(), BasicConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    def __init__(self, c: int, r: int):
        super().__init__()
        self.ChannelGate, self.SpatialGate = ChannelGate(c, r), SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class ResidualCBAMs(nn.Module):
    """Three CBAMs applied as relu(cbam(x) + x), the ReLUs as modules (`relu_0`... in the official code)."""

    def __init__(self, chans: tuple[int, int, int], r: int):
        super().__init__()
        self.cbams = nn.ModuleList(CBAM(c, r) for c in chans)
        self.relus = nn.ModuleList(nn.ReLU() for _ in chans)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [relu(cbam(f) + f) for cbam, relu, f in zip(self.cbams, self.relus, feats)]


class OfficialStructure(nn.Module):
    def __init__(self, cfg: FeatherFaceConfig):
        super().__init__()
        chans, n, s = cfg.backbone_channels, cfg.neck_channels, cfg.ssh_widths
        self.body = MobileNetV1Body(cfg.backbone_width)
        self.backbone_cbam = ResidualCBAMs(chans, cfg.backbone_cbam_reduction) if cfg.backbone_cbam else None
        self.neck = (nn.Sequential(*(BiFPNCell(n, chans, i == 0) for i in range(cfg.bifpn_repeats)))
                     if cfg.neck == "bifpn" else FPN(chans, n))
        self.neck_cbam = ResidualCBAMs((n, n, n), cfg.neck_cbam_reduction) if cfg.neck_cbam else None
        self.ssh = nn.ModuleList(SSH(n, w, cfg.ssh_deformable) for w in s)
        self.shuffle = nn.ModuleList(shuffle_module(cfg.shuffle, w, cfg.shuffle_groups) for w in s)
        values = (2, 4, 10) if cfg.landmarks else (2, 4)
        self.heads = nn.ModuleList(nn.ModuleList(Head(w, cfg.anchors_per_cell, v) for w in s) for v in values)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if self.backbone_cbam is not None:
            feats = self.backbone_cbam(feats)
        feats = list(self.neck(feats))
        if self.neck_cbam is not None:
            feats = self.neck_cbam(feats)
        feats = [cs(ssh(f)) for ssh, cs, f in zip(self.ssh, self.shuffle, feats)]
        return [torch.cat([h(f) for h, f in zip(kind, feats)], dim=1) for kind in self.heads]
