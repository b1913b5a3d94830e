"""Counting conventions: the parameter and MAC figures other tools report for a config, counted
analytically from each tool's own rules (no model is built; nothing is fitted).

Every figure starts from the true count with every convolution (`count(cfg, h, w, dcn_macs="full")`)
and each block's `Parts` (`featherface_tune.models.blocks.cost.Parts`: the slices tools disagree on -
BatchNorms, biases, upsampling, BiFPN fusion weights, the deformable convs' main and offset convs). A
`Convention` is a tuple of `Rule`s, one small pure function of the Parts per op it treats differently,
each giving a change to (params, MACs); its figure is the true count plus its rules' changes, times
`scale` (2 for FLOPs). The rules are linear in the Parts, so a convention applies to any sum of block
terms: per group, per SSH level or to the total alike.

Conventions (`CONVENTIONS[name].summary` is the one-line rule; `--conventions` prints the table):

- `numel`: trainable parameters (sum of numel()); MACs by fvcore's rule with every convolution
  (`dcn_macs="dense"` leaves the DCN offset/modulator convs out). The default.
- `fvcore`: fvcore's FlopCountAnalysis with a handle for the deformable-conv op (what `count --check`
  runs): the same figures as `numel` with `dcn_macs="full"`.
- `fvcore-stock`: stock fvcore on the official code, whose `torchvision::deform_conv2d` has no
  handle: the DCN main convs count 0.
- `thop`: thop 0.1.1's `profile` on the official code's modules (the paper's "0.49 M"): only leaf
  modules that run are counted, so the DCN main convs (weights used through the functional op) and
  the BiFPN fusion weights (parameters of non-leaf modules) are missed; BatchNorm counts 4 per
  element; `F.interpolate` counts 0. The official MobileNetV1 is fixed at width 0.25: other widths
  raise `ConfigError`.
- `torchinfo`: torchinfo 1.8's `summary`: all parameters; leaf modules that run: a conv counts
  (weights + bias) x output positions, any other layer its parameter count once per call.
- `ptflops`: ptflops 0.7's default backend on the official code: forward hooks on modules plus
  patched `F.*` calls. Convs (weights + bias) x positions, linears with bias, BatchNorm 2 per
  element, upsampling 1 per output, activations 1 per output and pooling 1 per input - an `nn.ReLU`
  or `nn.MaxPool2d` twice, as its hook fires and the `F.relu` / `F.max_pool2d` it calls is patched
  too; torchvision's DCN op is opaque to it (main convs 0), `x * y` and sigmoid count 0.
- `ptflops-aten`: ptflops 0.7's aten backend (`backend="aten"`) on the official code: convolutions
  and matrix products, biases included; torchvision's DCN op is opaque to it (main convs 0).
- `flops`: `torch.utils.flop_counter.FlopCounterMode`: 2 x the multiply-adds of convolutions and
  matrix products (the DCN main convs included); BatchNorm, upsampling and biases count 0.

API for code that sums per-term costs (a solver): every function returns (params, MACs) in the
convention and takes `dcn_macs` ("full" or "dense"; "dense" only with `numel`).

- `count(cfg, h, w, dcn_macs=..., convention=...)` (in `analytic`): totals and per-group figures;
  the base terms (backbone, neck) are its `groups` entries.
- `level_tail_in(convention, n, s, deformable, shuffle, anchors, landmarks, hw, dcn_macs)`: one
  level's SSH + shuffle + heads (the arguments of `analytic.level_tail`).
- `cbam_levels_in(convention, chans, r, hws, dcn_macs)`: three CBAMs (those of `analytic.cbam_levels`).
- `countable(convention, cfg)`: raises `ConfigError` when the convention cannot count the config.
- `get_convention(name, dcn_macs)`: the `Convention` (raises `ConfigError` listing the known ones).

A config's figure in a convention is exactly base + CBAM terms + the three level tails, as with the
true count (tested on random configs). E.g. under `thop`, official FeatherFace with `neck_channels=40`,
`backbone_cbam_reduction=4`, `neck_cbam_reduction=16`, `ssh_channels=[76, 128, 128]` counts 489,000
(643,713 true parameters). Under `flops` the second figure is FLOPs.

`reconcile(cfg, h, w)` puts every convention side by side with what each leaves out, per module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from featherface_tune.counter.analytic import (
    DCN_CONVENTIONS, GROUPS, CountResult, cbam_levels, cbam_levels_parts, count, group_parts,
    level_tail, level_tail_parts,
)
from featherface_tune.errors import ConfigError
from featherface_tune.models.blocks.cost import Parts
from featherface_tune.models.config import FeatherFaceConfig

OFFICIAL_BACKBONE_WIDTH = 0.25


@dataclass(frozen=True)
class Rule:
    """One op a convention treats differently from the true count: what, why, and the change."""

    what: str
    why: str
    delta: Callable[[Parts], tuple[int, int]]  # Parts -> (params change, MACs change)


# ---- the rules: one per op and treatment --------------------------------------------------------

DCN_MAIN_UNHOOKED = Rule("DCN main convs", "used functionally (deform_conv2d), not hooked",
                         lambda p: (-p.dcn_params, -p.dcn_macs))
DCN_MAIN_NO_HANDLE = Rule("DCN main convs", "torchvision::deform_conv2d has no fvcore handle: MACs 0",
                          lambda p: (0, -p.dcn_macs))
DCN_MAIN_NOT_RUN = Rule("DCN main convs", "their conv module never runs (weight used functionally)",
                        lambda p: (0, -p.dcn_macs))
DCN_MAIN_OPAQUE = Rule("DCN main convs", "torchvision::deform_conv2d is one opaque op: 0",
                       lambda p: (0, -p.dcn_macs))
DCN_AUX_LEFT_OUT = Rule("DCN offset+modulator convs", "left out by --dcn-macs dense",
                        lambda p: (0, -p.dcn_aux_macs))
FUSION_UNHOOKED = Rule("BiFPN fusion weights", "nn.Parameters of non-leaf modules, not hooked",
                       lambda p: (-p.fusion_params, 0))
UPSAMPLE_FUNCTIONAL = Rule("nearest upsampling", "F.interpolate is no module: 0",
                           lambda p: (0, -p.upsample_macs))
UPSAMPLE_NO_MATMUL = Rule("nearest upsampling", "no conv or matmul: 0", lambda p: (0, -p.upsample_macs))
BN_AFFINE_DOUBLED = Rule("BatchNorm", "4 per element (2 x normalise, x2 when affine)",
                         lambda p: (0, p.bn_macs))
BN_NO_MATMUL = Rule("BatchNorm", "no conv or matmul: 0", lambda p: (0, -p.bn_macs))
BN_PARAMS_ONCE = Rule("BatchNorm", "its parameter count once, not 2 per element",
                      lambda p: (0, p.bn_params - p.bn_macs))
ACTIVATIONS_HOOKED = Rule("activations", "1 per output; nn.ReLU twice (its hook and the patched F.relu)",
                         lambda p: (0, p.leaky_elems + 2 * p.relu_module_elems + p.relu_call_elems))
POOLING_HOOKED = Rule("pooling", "1 per input; nn.MaxPool2d twice (its hook and the patched F.max_pool2d)",
                      lambda p: (0, 2 * p.pool_module_in + p.pool_call_in))
BIAS_COUNTED = Rule("biases", "counted, x output positions (convs), x calls (linears)",
                    lambda p: (0, p.bias_macs))


@dataclass(frozen=True)
class Convention:
    name: str
    summary: str  # the one-line rule
    rules: tuple[Rule, ...] = ()
    unit: str = "MACs"
    scale: int = 1  # figure = scale x MACs (2 for FLOPs)
    official_only: bool = False  # counts the official code's modules: its MobileNetV1 is fixed

    def delta(self, parts: Parts) -> tuple[int, int]:
        """(params, MACs) change of all rules on `parts` (MACs unscaled)."""
        dp = dm = 0
        for rule in self.rules:
            p, m = rule.delta(parts)
            dp += p
            dm += m
        return dp, dm

    def apply(self, cost: tuple[int, int], parts: Parts) -> tuple[int, int]:
        """A true (params, MACs with every convolution) and its Parts, restated in this convention."""
        dp, dm = self.delta(parts)
        return cost[0] + dp, (cost[1] + dm) * self.scale


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("numel", "trainable parameters (sum of numel()); MACs by fvcore's rule, every convolution "
                        "counted (conv/linear weights x positions, BatchNorm 2 per element, nearest "
                        "upsampling 1 per output)"),
    Convention("fvcore", "fvcore FlopCountAnalysis with a handle for the DCN op (`count --check`); "
                         "parameter_count = numel: the same figures as numel"),
    Convention("fvcore-stock", "stock fvcore on the official code: torchvision::deform_conv2d has no "
                               "handle, so the DCN main convs count 0", (DCN_MAIN_NO_HANDLE,)),
    Convention("thop", "thop 0.1.1 profile on the official code's modules (the paper's 0.49 M): leaf "
                       "modules that run only; conv/linear weights x positions, BatchNorm 4 per "
                       "element, F.* ops 0",
               (DCN_MAIN_UNHOOKED, FUSION_UNHOOKED, UPSAMPLE_FUNCTIONAL, BN_AFFINE_DOUBLED),
               official_only=True),
    Convention("torchinfo", "torchinfo 1.8 summary: all parameters; leaf modules that run: conv "
                            "(weights + bias) x positions, other layers their parameter count per call",
               (DCN_MAIN_NOT_RUN, UPSAMPLE_FUNCTIONAL, BN_PARAMS_ONCE, BIAS_COUNTED)),
    Convention("ptflops", "ptflops 0.7 default backend on the official code: module hooks plus patched "
                          "F.*: convs and linears with biases, BatchNorm 2, activations and pooling 1 per "
                          "element; torchvision's DCN op 0",
               (DCN_MAIN_OPAQUE, BIAS_COUNTED, ACTIVATIONS_HOOKED, POOLING_HOOKED)),
    Convention("ptflops-aten", "ptflops 0.7 with backend='aten' on the official code: convolutions and "
                               "matrix products with biases; torchvision's DCN op, BatchNorm, upsampling 0",
               (DCN_MAIN_OPAQUE, BN_NO_MATMUL, UPSAMPLE_NO_MATMUL, BIAS_COUNTED)),
    Convention("flops", "torch.utils.flop_counter: FLOPs = 2 x multiply-adds of convolutions and "
                        "matrix products (DCN main convs included); BatchNorm, upsampling, biases 0",
               (BN_NO_MATMUL, UPSAMPLE_NO_MATMUL), unit="FLOPs", scale=2),
)}
NAMES = tuple(CONVENTIONS)


def get_convention(name: str, dcn_macs: str = "full") -> Convention:
    """The convention called `name`; with `dcn_macs="dense"` (numel only) the offset convs left out."""
    conv = CONVENTIONS.get(name)
    if conv is None:
        raise ConfigError(f"convention {name!r} is unknown; known conventions: {', '.join(NAMES)}")
    if dcn_macs not in DCN_CONVENTIONS:
        raise ConfigError(f"dcn_macs={dcn_macs!r} must be one of {', '.join(DCN_CONVENTIONS)}")
    if dcn_macs == "dense":
        if name != "numel":
            raise ConfigError(f"dcn_macs='dense' applies to the numel convention only; {name} counts "
                              "the deformable convs by its own rule")
        return dataclasses.replace(conv, rules=conv.rules + (DCN_AUX_LEFT_OUT,))
    return conv


def countable(conv: Convention | str, cfg: FeatherFaceConfig) -> None:
    """Raise ConfigError when `conv` cannot count `cfg` (the official code cannot build it)."""
    c = get_convention(conv) if isinstance(conv, str) else conv
    if c.official_only and cfg.backbone_width != OFFICIAL_BACKBONE_WIDTH:
        raise ConfigError(f"convention {c.name!r} counts the official code's modules, whose MobileNetV1 "
                          f"is fixed at width 0.25: backbone_width={cfg.backbone_width:g} cannot be counted")


def count_in(name: str, cfg: FeatherFaceConfig, h: int = 640, w: int = 640,
             dcn_macs: str = "full") -> CountResult:
    """`count` in convention `name` (what `count(..., convention=name)` returns)."""
    conv = get_convention(name, dcn_macs)
    countable(conv, cfg)
    full = count(cfg, h, w, dcn_macs="full")
    groups = tuple(conv.apply(g, p) for g, p in zip(full.groups, group_parts(cfg, h, w)))
    return full._replace(params=sum(g[0] for g in groups), macs=sum(g[1] for g in groups), groups=groups,
                         dcn_macs=dcn_macs, convention=name)


@lru_cache(maxsize=65536)
def level_tail_in(name: str, n: int, s: int, deformable: bool, shuffle: str, anchors: int,
                  landmarks: bool, hw: int, dcn_macs: str = "full") -> tuple[int, int]:
    """(params, MACs) of one level's SSH + shuffle + heads in convention `name`."""
    t = level_tail(n, s, deformable, shuffle, anchors, landmarks, hw)
    ssh, shuf, heads = level_tail_parts(n, s, deformable, shuffle, anchors, landmarks, hw)
    true = (t[0] + t[2] + t[4], t[1] + t[3] + t[5] + t[6])  # t[6]: offset/modulator convs
    return get_convention(name, dcn_macs).apply(true, ssh + shuf + heads)


@lru_cache(maxsize=8192)
def cbam_levels_in(name: str, chans: tuple[int, int, int], r: int, hws: tuple[int, int, int],
                   dcn_macs: str = "full") -> tuple[int, int]:
    """(params, MACs) of three CBAMs in convention `name`."""
    return get_convention(name, dcn_macs).apply(cbam_levels(chans, r, hws), cbam_levels_parts(chans, r, hws))


# ---- the reconciliation table ------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """One rule's effect on a config: totals and the modules it touches (MACs in the unit)."""

    what: str
    why: str
    params: int
    macs: int
    modules: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Figure:
    """One convention's figures for a config, against the true count (all convolutions)."""

    name: str
    summary: str
    unit: str
    params: int | None = None
    macs: int | None = None
    params_delta: int | None = None
    macs_delta: int | None = None  # against the true MACs in the same unit
    differences: tuple[Difference, ...] = ()
    error: str | None = None  # why the convention cannot count this config

    def to_json(self) -> dict[str, Any]:
        return {"convention": self.name, "rule": self.summary, "unit": self.unit, "params": self.params,
                "macs": self.macs, "params_delta": self.params_delta, "macs_delta": self.macs_delta,
                "differences": [{"what": d.what, "why": d.why, "params": d.params, "macs": d.macs,
                                 "modules": {g: {"params": p, "macs": m} for g, (p, m) in d.modules.items()}}
                                for d in self.differences],
                "error": self.error}


def _figure(conv: Convention, cfg: FeatherFaceConfig, full: CountResult, parts: tuple[Parts, ...]) -> Figure:
    try:
        countable(conv, cfg)
    except ConfigError as exc:
        return Figure(conv.name, conv.summary, conv.unit, error=str(exc))
    groups = [conv.apply(g, p) for g, p in zip(full.groups, parts)]
    params, macs = sum(g[0] for g in groups), sum(g[1] for g in groups)
    diffs = []
    for rule in conv.rules:
        mods = {}
        for g, p in zip(GROUPS, parts):
            dp, dm = rule.delta(p)
            if dp or dm:
                mods[g] = (dp, dm * conv.scale)
        if mods:
            diffs.append(Difference(rule.what, rule.why, sum(v[0] for v in mods.values()),
                                    sum(v[1] for v in mods.values()), mods))
    return Figure(conv.name, conv.summary, conv.unit, params, macs, params - full.params,
                  macs - full.macs * conv.scale, tuple(diffs))


def reconcile(cfg: FeatherFaceConfig, h: int = 640, w: int = 640) -> tuple[Figure, ...]:
    """Every convention's figures for `cfg` at h x w, with what each leaves out or adds, per module."""
    full = count(cfg, h, w, dcn_macs="full")
    parts = group_parts(cfg, h, w)
    return tuple(_figure(c, cfg, full, parts) for c in CONVENTIONS.values())


def reconcile_json(cfg: FeatherFaceConfig, h: int = 640, w: int = 640) -> dict[str, Any]:
    full = count(cfg, h, w, dcn_macs="full")
    return {"input_size": [h, w], "true": {"params": full.params, "macs": full.macs},
            "conventions": [f.to_json() for f in reconcile(cfg, h, w)]}


def clear_caches() -> None:
    for f in (level_tail_in, cbam_levels_in):
        f.cache_clear()
