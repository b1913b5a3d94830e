"""Per-level 1x1 prediction heads (class, box, landmarks) and their cost."""

from __future__ import annotations

import torch
from torch import nn

from featherface_tune.models.blocks.cost import Cost, Parts


class Head(nn.Module):
    """1x1 conv to anchors x `values`, reshaped to [B, H*W*anchors, values]."""

    def __init__(self, cin: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(cin, anchors * values, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


def head_values(landmarks: bool) -> tuple[int, ...]:
    """Values per anchor of each head: class (2), box (4), and landmarks (10) if present."""
    return (2, 4, 10) if landmarks else (2, 4)


def heads_cost(cin: int, anchors: int, landmarks: bool, hw: int) -> Cost:
    """1x1 convs with bias to anchors x (2 + 4 [+ 10]) outputs."""
    outs = anchors * sum(head_values(landmarks))
    return Cost((cin + 1) * outs, cin * outs * hw)


def heads_parts(cin: int, anchors: int, landmarks: bool, hw: int) -> Parts:
    """The 1x1 convs' biases."""
    return Parts(bias_macs=anchors * sum(head_values(landmarks)) * hw)
