"""Cross-checks of the analytic count against a built model: sum of numel() per group, fvcore's
FlopCountAnalysis (with a handle for the deformable-conv op), and torch.utils.flop_counter.

The model is left as it was: no buffers, hooks or state-dict keys are added, and its train/eval mode
is restored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from featherface_tune.counter.analytic import GROUPS, count
from featherface_tune.models.blocks.deform import FVCORE_HANDLES
from featherface_tune.models.arch import key_groups
from featherface_tune.models.builder import build_model
from featherface_tune.models.config import FeatherFaceConfig

TORCH_FLOP_CONVENTION = ("torch.utils.flop_counter: FLOPs = 2 x multiply-adds of convolutions and "
                         "matrix products only (BatchNorm, upsampling and the DCN's sampling count 0)")


@dataclass(frozen=True)
class CheckResult:
    analytic_params: int
    numel_params: int
    analytic_macs: int
    fvcore_macs: int
    torch_flops: int
    analytic_modules: dict[str, tuple[int, int]] = field(default_factory=dict)
    measured_modules: dict[str, tuple[int, int]] = field(default_factory=dict)
    unsupported_ops: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.analytic_params == self.numel_params and self.analytic_macs == self.fvcore_macs
                and self.analytic_modules == self.measured_modules)

    def mismatches(self) -> list[str]:
        out = []
        if self.analytic_params != self.numel_params:
            out.append(f"params: analytic {self.analytic_params:,} != numel {self.numel_params:,}")
        if self.analytic_macs != self.fvcore_macs:
            out.append(f"MACs: analytic {self.analytic_macs:,} != fvcore {self.fvcore_macs:,}")
        for g in GROUPS:
            a, m = self.analytic_modules.get(g), self.measured_modules.get(g)
            if a != m:
                out.append(f"{g}: analytic {a} != measured {m}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "params": {"analytic": self.analytic_params, "numel": self.numel_params},
            "macs": {"analytic": self.analytic_macs, "fvcore": self.fvcore_macs},
            "torch_flop_counter": {"flops": self.torch_flops, "convention": TORCH_FLOP_CONVENTION},
            "modules": {g: {"analytic": list(self.analytic_modules[g]),
                            "measured": list(self.measured_modules[g])} for g in GROUPS},
            "unsupported_ops": self.unsupported_ops,
        }


def _key_groups(model: torch.nn.Module) -> dict[str, str]:
    """Top-level attribute -> breakdown group of a built FeatherFace model (from its config)."""
    config = getattr(model, "config", None)
    if not isinstance(config, FeatherFaceConfig):
        raise TypeError("the cross-check needs a model built by featherface_tune (it has a .config)")
    return key_groups(config)


def numel_by_group(model: torch.nn.Module) -> dict[str, int]:
    """Parameters of a built model per breakdown group (groups by the model's own config)."""
    group = _key_groups(model)
    out = dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():
        out[group[name.split(".", 1)[0]]] += p.numel()
    return out


def fvcore_by_group(model: torch.nn.Module, x: torch.Tensor, dcn_macs: str = "full") -> tuple[int, dict[str, int], dict[str, int]]:
    """fvcore MACs (total, per group, unsupported ops) under our DCN convention."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fa = FlopCountAnalysis(model, x)
    fa.set_op_handle(**FVCORE_HANDLES)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    by_mod = fa.by_module()
    group = _key_groups(model)
    groups = dict.fromkeys(GROUPS, 0)
    for name, macs in by_mod.items():
        if name and "." not in name:
            groups[group[name]] += int(macs)
    if dcn_macs == "dense":  # offset/modulator convs live outside the total in this convention
        extra = sum(int(v) for k, v in by_mod.items()
                    if k.endswith(".offset_conv") or k.endswith(".modulator_conv"))
        groups["ssh"] -= extra
    return sum(groups.values()), groups, dict(fa.unsupported_ops())


def torch_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return int(fc.get_total_flops())


def check(cfg: FeatherFaceConfig, h: int = 640, w: int = 640, dcn_macs: str = "full",
          model: torch.nn.Module | None = None) -> CheckResult:
    """Build (or take) the model and compare every figure with the analytic count."""
    from featherface_tune.bounds import check_build_size

    check_build_size(h, w, "input size of the cross-check", cfg)
    analytic = count(cfg, h, w, dcn_macs=dcn_macs)
    model = model if model is not None else build_model(cfg)
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, h, w)
        numel = numel_by_group(model)
        total, groups, unsupported = fvcore_by_group(model, x, dcn_macs)
        tflops = torch_flops(model, x)
    finally:
        model.train(was_training)
    return CheckResult(
        analytic_params=analytic.params, numel_params=sum(numel.values()),
        analytic_macs=analytic.macs, fvcore_macs=total, torch_flops=tflops,
        analytic_modules={g: (c.params, c.macs) for g, c in analytic.modules.items()},
        measured_modules={g: (numel[g], groups[g]) for g in GROUPS},
        unsupported_ops=unsupported,
    )
