"""Build the PyTorch model of a config by walking the architecture's description
(`featherface_tune.models.arch.BLOCKS`). Attribute names follow the official FeatherFace code, so
official and RetinaFace state dicts load with strict key checking."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn

from featherface_tune.models.arch import layout
from featherface_tune.models.config import FeatherFaceConfig


@lru_cache(maxsize=None)
def _factory(path: str) -> Callable[..., nn.Module]:
    """The callable a block's `module` names ("package.module:attribute")."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


class FeatherFace(nn.Module):
    """backbone -> [CBAM] -> neck -> [CBAM] -> SSH -> shuffle -> heads, three levels (P3, P4, P5).

    forward(x) returns (boxes [B, N, 4], class logits [B, N, 2], landmarks [B, N, 10] or None).
    """

    # the head blocks' nn.ModuleLists (one 1x1 conv per level), read by forward
    ClassHead: nn.ModuleList
    BboxHead: nn.ModuleList
    LandmarkHead: nn.ModuleList

    def __init__(self, config: FeatherFaceConfig):
        super().__init__()
        self.config = config
        stages: list[tuple[str, tuple[str, ...]]] = []
        for block, instances in layout(config):
            make = _factory(block.module)
            for inst in instances:
                self._attach(inst.key, make(*inst.args))
            if block.role != "head":  # the heads are read by forward, whose outputs have fixed names
                stages.append((block.role, tuple(i.key for i in instances)))
        # attribute names, not modules: a replica (nn.DataParallel) resolves its own
        self._stages = tuple(stages)

    def _attach(self, key: str, module: nn.Module) -> None:
        """Register `module` as attribute `key`; "Name.i" appends to the nn.ModuleList `Name`."""
        name, _, index = key.partition(".")
        if not index:
            setattr(self, name, module)
            return
        if not hasattr(self, name):
            setattr(self, name, nn.ModuleList())
        modules = getattr(self, name)
        if int(index) != len(modules):
            raise ValueError(f"block instance {key!r} comes out of order ({name} has {len(modules)})")
        modules.append(module)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three per-level features the heads read, each block applied by its role."""
        feats: Any = x
        for role, keys in self._stages:
            mods = [getattr(self, k) for k in keys]
            if role == "body":
                feats = mods[0](feats)
            elif role == "neck":
                feats = list(mods[0](feats))
            elif role == "residual":
                feats = [torch.relu(m(f) + f) for m, f in zip(mods, feats)]
            else:  # "level"
                feats = [m(f) for m, f in zip(mods, feats)]
        return feats  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        feats = self.features(x)
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        ldm = (torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
               if self.config.landmarks else None)
        return boxes, logits, ldm


def build_model(config: FeatherFaceConfig) -> FeatherFace:
    """The nn.Module for a (validated) config; refused (InputError) when its weights alone would not
    fit in memory (a config with absurd widths is valid to count, not to build)."""
    from featherface_tune.bounds import check_build_params
    from featherface_tune.counter.analytic import count_params

    check_build_params(count_params(config))
    return FeatherFace(config)


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters: the sum of numel() over model.parameters()."""
    return sum(p.numel() for p in model.parameters())
