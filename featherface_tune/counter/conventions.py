"""Counting conventions: the parameter and MAC figures other tools report for a config, counted
analytically from each tool's own rules (no model is built; nothing is fitted).

Every figure starts from the true count with every convolution (`count(cfg, h, w, dcn_macs="full")`)
and each block's `Parts` (`featherface_tune.models.arch.cost.Parts`: the slices tools disagree on -
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

A `Convention` is the whole counting rule, the DCN MAC convention included (`.name`, `.dcn_macs`):
it is what travels, as `counting`, rather than the two strings: `count(cfg, convention=...)`, the
solver (`prove(..., counting=...)`, `Repairer`), an objective's `registry.Context`, a study's
`StudySpec` (stored as its keys `convention` and `dcn_macs`: `to_attr` / `from_attr`), a budget and
its baseline, a report's breakdown. `get_convention(name, dcn_macs)` is the one place the pair a
user gives is checked (a ConfigError about the field that breaks a rule); a new convention is one
entry of `CONVENTIONS` (its rules), nothing else.

API for code that sums per-term costs (a solver): `get_convention(name, dcn_macs).total(prices)`
restates block prices (`featherface_tune.models.arch.term_price`, `block_price`) in the convention and
adds them; `dcn_macs` is "full" or "dense" ("dense" only with `numel`). `countable(convention, cfg)`
raises `ConfigError` when the convention cannot count the config.

A config's figure in a convention is exactly the sum of its search terms' figures (base, the three
levels, the CBAM terms), as with the true count (tested on random configs). E.g. under `thop`, official
FeatherFace with `neck_channels=40`, `backbone_cbam_reduction=4`, `neck_cbam_reduction=16`,
`ssh_channels=[76, 128, 128]` counts 489,000 (643,713 true parameters). Under `flops` the second figure
is FLOPs.

`reconcile(cfg, h, w)` puts every convention side by side with what each leaves out, per module.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from featherface_tune.errors import ConfigError
from featherface_tune.models.arch import GROUPS, Parts, Priced, priced_groups
from featherface_tune.models.config import FeatherFaceConfig

OFFICIAL_BACKBONE_WIDTH = 0.25
DCN_CONVENTIONS = ("dense", "full")  # MACs without / with the deformable convs' offset and modulator convs


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
DCN_AUX_LEFT_OUT = Rule("DCN offset+modulator convs", "left out (dcn_macs 'dense')",
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
    dcn_macs: str = "full"  # "dense": the DCN offset/modulator convs left out (numel only; `get_convention`)

    def __hash__(self) -> int:  # a key of the solver's and the counter's caches: hashed once
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.name, self.dcn_macs, self.rules))

    def to_attr(self) -> dict[str, str]:
        """The keys a study, a budget file or a count's JSON stores the convention under (`from_attr`)."""
        return {"convention": self.name, "dcn_macs": self.dcn_macs}

    def delta(self, parts: Parts) -> tuple[int, int]:
        """(params, MACs) change of all rules on `parts` (MACs unscaled)."""
        dp = dm = 0
        for rule in self.rules:
            p, m = rule.delta(parts)
            dp += p
            dm += m
        return dp, dm

    def total(self, prices: Iterable[Priced]) -> tuple[int, int]:
        """(params, MACs) of several block prices in this convention: each restated, then added (the
        rules are linear, so this is the convention's figure of their sum)."""
        params = macs = 0
        if not self.rules:  # the true count: the costs alone
            for cost, _ in prices:
                params, macs = params + cost[0], macs + cost[1]
            return params, macs * self.scale
        for cost, parts in prices:
            p, m = self.apply(cost, parts)
            params, macs = params + p, macs + m
        return params, macs

    def apply(self, cost: tuple[int, int], parts: Parts) -> tuple[int, int]:
        """A true (params, MACs with every convolution) and its Parts, restated in this convention."""
        if not self.rules:
            return cost[0], cost[1] * self.scale
        dp, dm = self.delta(parts)
        return cost[0] + dp, (cost[1] + dm) * self.scale


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("numel", "trainable parameters (sum of numel()); MACs by fvcore's rule, every convolution "
                        "counted (conv/linear weights x positions, BatchNorm 2 per element, nearest "
                        "upsampling 1 per output)"),
    Convention("fvcore", "fvcore FlopCountAnalysis with a handle for the DCN op (count's cross-check); "
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
TRUE = CONVENTIONS["numel"]  # every parameter, every convolution: the figure the others differ from


_DENSE: dict[Convention, Convention] = {}  # numel -> numel with the DCN offset convs left out, built once


def get_convention(name: str | Convention, dcn_macs: str = "full") -> Convention:
    """The convention called `name` (a registered one: an entry of `CONVENTIONS`); with
    `dcn_macs="dense"` (numel only) the DCN offset and modulator convs left out. The one place the
    pair a user gives (`convention`, `dcn_macs`) is checked: a ConfigError about the field that
    breaks a rule. A Convention is returned as it is (it already holds its DCN MAC convention)."""
    if isinstance(name, Convention):  # it holds its DCN MAC convention: a different one named is a contradiction
        if dcn_macs != "full" and dcn_macs != name.dcn_macs:
            raise ConfigError(field="dcn_macs", value=dcn_macs, refs=("convention",),
                              rule=f"contradicts the {{convention}} given, which counts DCN MACs {name.dcn_macs}")
        return name
    conv = CONVENTIONS.get(name) if isinstance(name, str) else None
    if conv is None:
        raise ConfigError(field="convention", value=name, rule=f"unknown; known conventions: {', '.join(CONVENTIONS)}")
    if not isinstance(dcn_macs, str) or dcn_macs not in DCN_CONVENTIONS:
        raise ConfigError(field="dcn_macs", value=dcn_macs, rule=f"must be one of {', '.join(DCN_CONVENTIONS)}")
    if dcn_macs == "full":
        return conv
    if name != TRUE.name:
        raise ConfigError(field="dcn_macs", value=dcn_macs, refs=("convention",),
                          rule=f"applies to the {TRUE.name} convention only; {{convention}} {name} counts the "
                               "deformable convs by its own rule")
    dense = _DENSE.get(conv)
    if dense is None:
        dense = _DENSE[conv] = dataclasses.replace(conv, rules=conv.rules + (DCN_AUX_LEFT_OUT,), dcn_macs="dense")
    return dense


def from_attr(data: Mapping[str, Any], legacy_dcn_macs: str = "full") -> Convention:
    """The convention a stored record names by its keys `convention` and `dcn_macs` (`to_attr`);
    a record from before a key existed: "numel" and `legacy_dcn_macs`."""
    return get_convention(str(data.get("convention", TRUE.name)), str(data.get("dcn_macs", legacy_dcn_macs)))


def countable(conv: Convention | str, cfg: FeatherFaceConfig) -> None:
    """Raise ConfigError when `conv` cannot count `cfg` (the official code cannot build it)."""
    c = get_convention(conv) if isinstance(conv, str) else conv
    if c.official_only and cfg.backbone_width != OFFICIAL_BACKBONE_WIDTH:
        raise ConfigError(f"convention {c.name!r} counts the official code's modules, whose MobileNetV1 "
                          f"is fixed at width 0.25: backbone_width={cfg.backbone_width:g} cannot be counted")


# ---- the reconciliation table ------------------------------------------------------------------

class CountedIn:
    """A record that holds `counting` (a Convention) and still answers the two names a stored record
    and its readers use, `convention` and `dcn_macs` (read-only: `counting` is what travels)."""

    counting: Convention

    @property
    def dcn_macs(self) -> str:
        return self.counting.dcn_macs

    @property
    def convention(self) -> str:
        return self.counting.name


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


def _figure(conv: Convention, cfg: FeatherFaceConfig, priced: Mapping[str, tuple[Priced, ...]]) -> Figure:
    try:
        countable(conv, cfg)
    except ConfigError as exc:
        return Figure(conv.name, conv.summary, conv.unit, error=str(exc))
    groups = [conv.total(priced[g]) for g in GROUPS]
    params, macs = sum(g[0] for g in groups), sum(g[1] for g in groups)
    true_params, true_macs = TRUE.total(p for g in GROUPS for p in priced[g])
    diffs = []
    for rule in conv.rules:
        mods = {}
        for g in GROUPS:
            dp = dm = 0
            for price in priced[g]:
                p, m = rule.delta(price.parts)
                dp, dm = dp + p, dm + m
            if dp or dm:
                mods[g] = (dp, dm * conv.scale)
        if mods:
            diffs.append(Difference(rule.what, rule.why, sum(v[0] for v in mods.values()),
                                    sum(v[1] for v in mods.values()), mods))
    return Figure(conv.name, conv.summary, conv.unit, params, macs, params - true_params,
                  macs - true_macs * conv.scale, tuple(diffs))


def reconcile(cfg: FeatherFaceConfig, h: int = 640, w: int = 640) -> tuple[Figure, ...]:
    """Every convention's figures for `cfg` at h x w, with what each leaves out or adds, per module."""
    priced = priced_groups(cfg, h, w)
    return tuple(_figure(c, cfg, priced) for c in CONVENTIONS.values())


def reconcile_json(cfg: FeatherFaceConfig, h: int = 640, w: int = 640) -> dict[str, Any]:
    params, macs = TRUE.total(p for prices in priced_groups(cfg, h, w).values() for p in prices)
    return {"input_size": [h, w], "true": {"params": params, "macs": macs},
            "conventions": [f.to_json() for f in reconcile(cfg, h, w)]}
