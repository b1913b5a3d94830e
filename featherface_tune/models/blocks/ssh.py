"""SSH context module (3x3 / 5x5 / 7x7 branches by stacked 3x3 convs), plain or deformable, and its cost."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from featherface_tune.models.blocks.cost import Cost, Parts
from featherface_tune.models.blocks.deform import DeformableConv2d, dcn_offset_macs, dcn_sampling_macs


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


def ssh_cost(cin: int, cout: int, deformable: bool, hw: int) -> Cost:
    """Closed form of the five 3x3 conv + BN units (cin->cout/2, cin->q, then three q->q, with
    q = cout/4); with DCN, each unit adds its
    offset (18 ch) and modulator (9 ch) conv params: 243 per input channel + 27 biases."""
    q = cout // 4
    per_pos = 9 * (cin * (cout // 2) + cin * q + 3 * q * q) + 2 * (cout // 2 + 4 * q)  # weights + BN
    params = per_pos + (243 * (2 * cin + 3 * q) + 5 * 27 if deformable else 0)
    return Cost(params, per_pos * hw)


def ssh_parts(cin: int, cout: int, deformable: bool, hw: int) -> Parts:
    """Five BatchNorms (cout/2 + 4 x cout/4 channels), two LeakyReLUs (cout/4 each), the closing
    F.relu; with DCN, the five main convs' weights and MACs, and the offset/modulator convs' MACs
    and biases (27 per conv)."""
    q = cout // 4
    bn = cout // 2 + 4 * q
    plain = Parts(bn_params=2 * bn, bn_macs=2 * bn * hw, leaky_elems=2 * q * hw, relu_call_elems=cout * hw)
    if not deformable:
        return plain
    main = 9 * (cin * (cout // 2) + cin * q + 3 * q * q)
    return plain._replace(bias_macs=5 * 27 * hw, dcn_params=main, dcn_macs=main * hw,
                          dcn_aux_macs=ssh_dcn_extra_macs(cin, cout, True, hw)[0])


def ssh_dcn_extra_macs(cin: int, cout: int, deformable: bool, hw: int) -> tuple[int, int]:
    """(offset+modulator conv MACs, bilinear-sampling MACs) of the SSH's deformable convs: the five
    convs read cin, cin, q, q, q channels (q = cout/4)."""
    if not deformable:
        return 0, 0
    ins = 2 * cin + 3 * (cout // 4)
    return dcn_offset_macs(ins, hw), dcn_sampling_macs(ins, hw)
