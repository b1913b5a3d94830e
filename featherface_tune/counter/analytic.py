"""Analytic parameter and MAC counts from a config alone (no model is built).

Convention (fvcore's, model in eval mode): one fused multiply-add counts 1; see
`featherface_tune.models.blocks` for the per-op rules. A deformable conv's MACs are those of the dense
conv of the same shape; its offset and modulator convs (`dcn_offset_macs`) and its bilinear sampling
(`dcn_sampling_macs`) are also reported on their own lines. `dcn_macs="full"` (default: every
convolution counts) puts the offset and modulator convs in `macs` (what fvcore measures on the model
with a handle for the op); `dcn_macs="dense"` leaves them out. Bilinear sampling is never in `macs`.

`count(..., convention=NAME)` gives the figures other counting tools report for the same config
(thop, stock fvcore, torchinfo, torch's flop counter); see `featherface_tune.counter.conventions`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from featherface_tune.models.blocks.backbone import backbone_cost, backbone_parts, level_sizes
from featherface_tune.models.blocks.bifpn import bifpn_cost, bifpn_parts, same_pool_in
from featherface_tune.models.blocks.cbam import cbam_cost, cbam_parts
from featherface_tune.models.blocks.cost import NO_PARTS, ZERO, Cost, Parts
from featherface_tune.models.blocks.fpn import fpn_cost, fpn_parts
from featherface_tune.models.blocks.heads import heads_cost, heads_parts
from featherface_tune.models.blocks.shuffle import shuffle_cost, shuffle_parts
from featherface_tune.models.blocks.ssh import ssh_cost, ssh_dcn_extra_macs, ssh_parts
from featherface_tune.models.config import FeatherFaceConfig, backbone_channels

GROUPS = ("backbone", "backbone_cbam", "neck", "neck_cbam", "ssh", "shuffle", "heads")
DCN_CONVENTIONS = ("dense", "full")


class CountResult(NamedTuple):
    """Exact totals for one config and input size. `groups` holds (params, macs) per GROUPS entry;
    `modules` presents them as a dict. `params`, `macs` and `groups` are in `convention` (`macs` holds
    FLOPs under "flops"); the DCN offset and sampling lines are always the true MACs."""

    params: int
    macs: int
    input_size: tuple[int, int]
    groups: tuple[tuple[int, int], ...]
    dcn_offset_macs: int = 0
    dcn_sampling_macs: int = 0
    dcn_macs: str = "full"
    convention: str = "numel"

    @property
    def modules(self) -> dict[str, Cost]:
        return {name: Cost(*pm) for name, pm in zip(GROUPS, self.groups)}

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "input_size": list(self.input_size),
            "modules": {n: {"params": p, "macs": m} for n, (p, m) in zip(GROUPS, self.groups)},
            "dcn_offset_macs": self.dcn_offset_macs,
            "dcn_sampling_macs": self.dcn_sampling_macs,
            "dcn_macs": self.dcn_macs,
            "convention": self.convention,
        }


@lru_cache(maxsize=1024)
def level_hws(h: int, w: int) -> tuple[int, int, int]:
    if h < 1 or w < 1:
        from featherface_tune.errors import ConfigError

        raise ConfigError(f"input size {h}x{w} must be positive")
    (h3, w3), (h4, w4), (h5, w5) = level_sizes(h, w)
    return (h3 * w3, h4 * w4, h5 * w5)


@lru_cache(maxsize=8192)
def cbam_levels(chans: tuple[int, int, int], r: int, hws: tuple[int, int, int]) -> tuple[int, int]:
    a = cbam_cost(chans[0], r, hws[0])
    b = cbam_cost(chans[1], r, hws[1])
    c = cbam_cost(chans[2], r, hws[2])
    return (a[0] + b[0] + c[0], a[1] + b[1] + c[1])


@lru_cache(maxsize=65536)
def level_tail(n: int, s: int, deformable: bool, shuffle: str, anchors: int, landmarks: bool,
                hw: int) -> tuple[int, int, int, int, int, int, int, int]:
    """SSH, shuffle and heads of one level, plus the DCN offset/sampling MACs, as flat ints."""
    a = ssh_cost(n, s, deformable, hw)
    b = shuffle_cost(shuffle, s, hw)
    c = heads_cost(s, anchors, landmarks, hw)
    off, samp = ssh_dcn_extra_macs(n, s, deformable, hw)
    return (a[0], a[1], b[0], b[1], c[0], c[1], off, samp)


@lru_cache(maxsize=8192)
def cbam_levels_parts(chans: tuple[int, int, int], r: int, hws: tuple[int, int, int]) -> Parts:
    """`cbam_levels`'s Parts (same arguments)."""
    return cbam_parts(chans[0], r, hws[0]) + cbam_parts(chans[1], r, hws[1]) + cbam_parts(chans[2], r, hws[2])


@lru_cache(maxsize=65536)
def level_tail_parts(n: int, s: int, deformable: bool, shuffle: str, anchors: int, landmarks: bool,
                     hw: int) -> tuple[Parts, Parts, Parts]:
    """`level_tail`'s Parts (same arguments): SSH, shuffle, heads."""
    return (ssh_parts(n, s, deformable, hw), shuffle_parts(shuffle, s, hw),
            heads_parts(s, anchors, landmarks, hw))


@lru_cache(maxsize=16384)
def _bifpn(chans: tuple[int, int, int], n: int, repeats: int, hws: tuple[int, int, int]) -> Cost:
    return bifpn_cost(chans, n, repeats, *hws)




def check_dcn_macs(value: str, option: str = "--dcn-macs") -> str:
    """A user's MAC convention, or a one-line InputError naming `option` and the choices."""
    if value not in DCN_CONVENTIONS:
        from featherface_tune.errors import InputError

        raise InputError(f"{option} {value!r}: use {' or '.join(DCN_CONVENTIONS)}")
    return value


def count(cfg: FeatherFaceConfig, h: int = 640, w: int = 640, dcn_macs: str = "full",
          convention: str = "numel") -> CountResult:
    """Total and per-group params and MACs for an h x w input (see the module doc for `dcn_macs`),
    in a counting convention (default: true parameters, fvcore MACs)."""
    if dcn_macs not in DCN_CONVENTIONS:
        from featherface_tune.errors import ConfigError

        raise ConfigError(f"dcn_macs={dcn_macs!r} must be one of {', '.join(DCN_CONVENTIONS)}")
    if convention != "numel":
        from featherface_tune.counter.conventions import count_in

        return count_in(convention, cfg, h, w, dcn_macs)
    hws = level_hws(h, w)
    bw = cfg.backbone_width
    chans = _chans(bw)
    n = cfg.neck_channels
    bb = backbone_cost(bw, h, w)
    bcb = cbam_levels(chans, cfg.backbone_cbam_reduction, hws) if cfg.backbone_cbam else ZERO
    neck = (_bifpn(chans, n, cfg.bifpn_repeats, hws) if cfg.neck == "bifpn"
            else fpn_cost(chans, n, *hws))
    ncb = cbam_levels((n, n, n), cfg.neck_cbam_reduction, hws) if cfg.neck_cbam else ZERO
    s = cfg.ssh_channels
    s3, s4, s5 = (s, s, s) if isinstance(s, int) else s
    dcn, shuffle, anchors, landmarks = cfg.ssh_deformable, cfg.shuffle, cfg.anchors_per_cell, cfg.landmarks
    t3 = level_tail(n, s3, dcn, shuffle, anchors, landmarks, hws[0])
    t4 = level_tail(n, s4, dcn, shuffle, anchors, landmarks, hws[1])
    t5 = level_tail(n, s5, dcn, shuffle, anchors, landmarks, hws[2])
    off = t3[6] + t4[6] + t5[6]
    ssh = (t3[0] + t4[0] + t5[0], t3[1] + t4[1] + t5[1] + (off if dcn_macs == "full" else 0))
    shuf = (t3[2] + t4[2] + t5[2], t3[3] + t4[3] + t5[3])
    heads = (t3[4] + t4[4] + t5[4], t3[5] + t4[5] + t5[5])
    # block costs are (params, MACs) tuples already: they go into `groups` as they are
    params = bb[0] + bcb[0] + neck[0] + ncb[0] + ssh[0] + shuf[0] + heads[0]
    macs = bb[1] + bcb[1] + neck[1] + ncb[1] + ssh[1] + shuf[1] + heads[1]
    return CountResult(params, macs, (h, w), (bb, bcb, neck, ncb, ssh, shuf, heads), off,
                       t3[7] + t4[7] + t5[7], dcn_macs)


_chans = lru_cache(maxsize=64)(backbone_channels)


def group_parts(cfg: FeatherFaceConfig, h: int = 640, w: int = 640) -> tuple[Parts, ...]:
    """Per GROUPS entry, the Parts of its full cost (the slices conventions treat differently);
    the same block terms as `count`, so `count_in` can restate each group in any convention."""
    hws = level_hws(h, w)
    bw, n = cfg.backbone_width, cfg.neck_channels
    chans = _chans(bw)
    bb = backbone_parts(bw, h, w)
    bcb = cbam_levels_parts(chans, cfg.backbone_cbam_reduction, hws) if cfg.backbone_cbam else NO_PARTS
    if cfg.neck == "bifpn":
        (h3, w3), (h4, w4), _ = level_sizes(h, w)
        neck = bifpn_parts(chans, n, cfg.bifpn_repeats, *hws, same_pool_in(h3, w3), same_pool_in(h4, w4))
    else:
        neck = fpn_parts(chans, n, *hws)
    ncb = cbam_levels_parts((n, n, n), cfg.neck_cbam_reduction, hws) if cfg.neck_cbam else NO_PARTS
    tails = [level_tail_parts(n, s, cfg.ssh_deformable, cfg.shuffle, cfg.anchors_per_cell, cfg.landmarks, hw)
             for s, hw in zip(cfg.ssh_widths, hws)]
    ssh, shuf, heads = (tails[0][k] + tails[1][k] + tails[2][k] for k in range(3))  # per group, P3+P4+P5
    return (bb, bcb, neck, ncb, ssh, shuf, heads)


def count_params(cfg: FeatherFaceConfig) -> int:
    """Learnable parameters only (independent of the input size)."""
    return count(cfg, 32, 32).params


def clear_caches() -> None:
    """Forget every memoised block cost (for cold-start timing)."""
    from featherface_tune.models.blocks import backbone, fpn

    for f in (backbone.backbone_cost, backbone.backbone_parts, fpn.fpn_cost, _bifpn, _chans, level_hws,
              cbam_levels, level_tail, cbam_levels_parts, level_tail_parts):
        f.cache_clear()
