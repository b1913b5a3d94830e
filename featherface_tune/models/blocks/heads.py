"""Per-level 1x1 prediction heads (class, box, landmarks); their cost: `featherface_tune.models.arch.heads`."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """1x1 conv to anchors x `values`, reshaped to [B, H*W*anchors, values]."""

    def __init__(self, cin: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(cin, anchors * values, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)
