"""Conv + BatchNorm (+ LeakyReLU) stacks used by the backbone, FPN and SSH."""

from __future__ import annotations

from torch import nn


def conv_bn(cin: int, cout: int, stride: int = 1, leaky: float | None = 0.0) -> nn.Sequential:
    """3x3 conv (no bias), BatchNorm, then LeakyReLU(leaky) unless leaky is None."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def conv_bn1x1(cin: int, cout: int, leaky: float = 0.0) -> nn.Sequential:
    """1x1 conv (no bias), BatchNorm, LeakyReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def conv_dw(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """MobileNetV1 depthwise-separable unit: dw 3x3 + BN + LeakyReLU, pw 1x1 + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )
