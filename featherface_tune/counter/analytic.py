"""Analytic parameter and MAC counts from a config alone (no model is built).

Convention (fvcore's, model in eval mode): one fused multiply-add counts 1; see
`featherface_tune.models.blocks` for the per-op rules. A deformable conv's MACs are those of the dense
conv of the same shape; its offset and modulator convs (`dcn_offset_macs`) and its bilinear sampling
(`dcn_sampling_macs`) are reported on their own lines. `dcn_macs="dense"` (default, the convention of
the published FeatherFace figures) keeps both outside `macs`; `dcn_macs="full"` adds the offset and
modulator convs to `macs` (what fvcore measures on the model with a handle for the op).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featherface_tune.models.blocks.backbone import backbone_cost, level_sizes
from featherface_tune.models.blocks.bifpn import bifpn_cost
from featherface_tune.models.blocks.cbam import cbam_cost
from featherface_tune.models.blocks.cost import Cost
from featherface_tune.models.blocks.fpn import fpn_cost
from featherface_tune.models.blocks.heads import heads_cost
from featherface_tune.models.blocks.shuffle import shuffle_cost
from featherface_tune.models.blocks.ssh import ssh_cost, ssh_dcn_extra_macs
from featherface_tune.models.config import FeatherFaceConfig

GROUPS = ("backbone", "backbone_cbam", "neck", "neck_cbam", "ssh", "shuffle", "heads")
DEFAULT_INPUT = (640, 640)
DCN_CONVENTIONS = ("dense", "full")


@dataclass(frozen=True)
class CountResult:
    params: int
    macs: int
    input_size: tuple[int, int]
    modules: dict[str, Cost] = field(default_factory=dict)
    dcn_offset_macs: int = 0
    dcn_sampling_macs: int = 0
    dcn_macs: str = "dense"

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "input_size": list(self.input_size),
            "modules": {k: {"params": v.params, "macs": v.macs} for k, v in self.modules.items()},
            "dcn_offset_macs": self.dcn_offset_macs,
            "dcn_sampling_macs": self.dcn_sampling_macs,
            "dcn_macs": self.dcn_macs,
        }


def _check_size(h: int, w: int) -> None:
    from featherface_tune.errors import ConfigError

    if h < 1 or w < 1:
        raise ConfigError(f"input size {h}x{w} must be positive")


def breakdown(cfg: FeatherFaceConfig, h: int = 640, w: int = 640) -> dict[str, Cost]:
    """Per-group cost for an h x w input."""
    _check_size(h, w)
    (h3, w3), (h4, w4), (h5, w5) = level_sizes(h, w)
    hws = (h3 * w3, h4 * w4, h5 * w5)
    chans = cfg.backbone_channels
    zero = Cost(0, 0)
    out = {"backbone": backbone_cost(cfg.backbone_width, h, w)}
    out["backbone_cbam"] = (cbam_cost(chans[0], cfg.backbone_cbam_reduction, hws[0])
                            + cbam_cost(chans[1], cfg.backbone_cbam_reduction, hws[1])
                            + cbam_cost(chans[2], cfg.backbone_cbam_reduction, hws[2])
                            if cfg.backbone_cbam else zero)
    n = cfg.neck_channels
    out["neck"] = (bifpn_cost(chans, n, cfg.bifpn_repeats, *hws) if cfg.neck == "bifpn"
                   else fpn_cost(chans, n, *hws))
    r = cfg.neck_cbam_reduction
    out["neck_cbam"] = (cbam_cost(n, r, hws[0]) + cbam_cost(n, r, hws[1]) + cbam_cost(n, r, hws[2])
                        if cfg.neck_cbam else zero)
    ssh, shuf, heads = zero, zero, zero
    for s, hw in zip(cfg.ssh_widths, hws):
        ssh = ssh + ssh_cost(n, s, cfg.ssh_deformable, hw)
        shuf = shuf + shuffle_cost(cfg.shuffle, s, hw)
        heads = heads + heads_cost(s, cfg.anchors_per_cell, cfg.landmarks, hw)
    out["ssh"], out["shuffle"], out["heads"] = ssh, shuf, heads
    return out


def dcn_extra_macs(cfg: FeatherFaceConfig, h: int = 640, w: int = 640) -> tuple[int, int]:
    """(offset+modulator conv MACs, bilinear-sampling MACs) of all deformable convs."""
    off = samp = 0
    for s, (lh, lw) in zip(cfg.ssh_widths, level_sizes(h, w)):
        o, p = ssh_dcn_extra_macs(cfg.neck_channels, s, cfg.ssh_deformable, lh * lw)
        off, samp = off + o, samp + p
    return off, samp


def count(cfg: FeatherFaceConfig, h: int = 640, w: int = 640, dcn_macs: str = "dense") -> CountResult:
    """Total and per-group params and MACs for an h x w input (see the module doc for `dcn_macs`)."""
    if dcn_macs not in DCN_CONVENTIONS:
        from featherface_tune.errors import ConfigError

        raise ConfigError(f"dcn_macs={dcn_macs!r} must be one of {', '.join(DCN_CONVENTIONS)}")
    mods = breakdown(cfg, h, w)
    offset, sampling = dcn_extra_macs(cfg, h, w)
    if dcn_macs == "full" and offset:
        mods["ssh"] = mods["ssh"] + Cost(0, offset)
    params = sum(c.params for c in mods.values())
    macs = sum(c.macs for c in mods.values())
    return CountResult(params, macs, (h, w), mods, offset, sampling, dcn_macs)


def count_params(cfg: FeatherFaceConfig) -> int:
    """Learnable parameters only (independent of the input size)."""
    return sum(c.params for c in breakdown(cfg, 32, 32).values())
