"""Build the PyTorch model of a config. Attribute names follow the official FeatherFace code, so
official and RetinaFace state dicts load with strict key checking."""

from __future__ import annotations


import torch
from torch import nn

from featherface_tune.models.blocks.backbone import MobileNetV1Body
from featherface_tune.models.blocks.bifpn import BiFPN
from featherface_tune.models.blocks.cbam import CBAM
from featherface_tune.models.blocks.fpn import FPN
from featherface_tune.models.blocks.heads import Head
from featherface_tune.models.blocks.shuffle import shuffle_module
from featherface_tune.models.blocks.ssh import SSH
from featherface_tune.models.config import FeatherFaceConfig

# Breakdown group -> attribute-name prefixes of the model (used by the cross-checks).
MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "backbone": ("body",),
    "backbone_cbam": ("bacbkbone_0_cbam", "bacbkbone_1_cbam", "bacbkbone_2_cbam"),
    "neck": ("bifpn", "fpn"),
    "neck_cbam": ("bif_cbam_0", "bif_cbam_1", "bif_cbam_2"),
    "ssh": ("ssh1", "ssh2", "ssh3"),
    "shuffle": ("ssh1_cs", "ssh2_cs", "ssh3_cs"),
    "heads": ("ClassHead", "BboxHead", "LandmarkHead"),
}


def group_of(name: str) -> str:
    """Breakdown group of a parameter or module name such as `ssh1.conv3X3.0.weight`."""
    top = name.split(".", 1)[0]
    for group, prefixes in MODULE_GROUPS.items():
        if top in prefixes:
            return group
    raise KeyError(name)


class FeatherFace(nn.Module):
    """backbone -> [CBAM] -> neck -> [CBAM] -> SSH -> shuffle -> heads, three levels (P3, P4, P5).

    forward(x) returns (boxes [B, N, 4], class logits [B, N, 2], landmarks [B, N, 10] or None).
    """

    def __init__(self, config: FeatherFaceConfig):
        super().__init__()
        self.config = config
        c3, c4, c5 = config.backbone_channels
        self.body = MobileNetV1Body(config.backbone_width)
        if config.backbone_cbam:
            r = config.backbone_cbam_reduction
            self.bacbkbone_0_cbam, self.bacbkbone_1_cbam, self.bacbkbone_2_cbam = (
                CBAM(c3, r), CBAM(c4, r), CBAM(c5, r))
        n = config.neck_channels
        if config.neck == "bifpn":
            self.bifpn = BiFPN((c3, c4, c5), n, config.bifpn_repeats)
        else:
            self.fpn = FPN((c3, c4, c5), n)
        if config.neck_cbam:
            r = config.neck_cbam_reduction
            self.bif_cbam_0, self.bif_cbam_1, self.bif_cbam_2 = CBAM(n, r), CBAM(n, r), CBAM(n, r)
        s = config.ssh_widths
        self.ssh1, self.ssh2, self.ssh3 = (SSH(n, w, config.ssh_deformable) for w in s)
        g = config.shuffle_groups
        self.ssh1_cs, self.ssh2_cs, self.ssh3_cs = (shuffle_module(config.shuffle, w, g) for w in s)
        a = config.anchors_per_cell
        self.ClassHead = nn.ModuleList(Head(w, a, 2) for w in s)
        self.BboxHead = nn.ModuleList(Head(w, a, 4) for w in s)
        if config.landmarks:
            self.LandmarkHead = nn.ModuleList(Head(w, a, 10) for w in s)

    @staticmethod
    def _cbam_residual(cbams: tuple[nn.Module, ...], feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.relu(cbam(f) + f) for cbam, f in zip(cbams, feats)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three per-level features the heads read."""
        cfg = self.config
        feats = self.body(x)
        if cfg.backbone_cbam:
            feats = self._cbam_residual((self.bacbkbone_0_cbam, self.bacbkbone_1_cbam,
                                         self.bacbkbone_2_cbam), feats)
        feats = self.bifpn(feats) if cfg.neck == "bifpn" else self.fpn(feats)
        if cfg.neck_cbam:
            feats = self._cbam_residual((self.bif_cbam_0, self.bif_cbam_1, self.bif_cbam_2), list(feats))
        feats = [ssh(f) for ssh, f in zip((self.ssh1, self.ssh2, self.ssh3), feats)]
        return [cs(f) for cs, f in zip((self.ssh1_cs, self.ssh2_cs, self.ssh3_cs), feats)]

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
