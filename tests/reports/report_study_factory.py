"""Builds small featherface-tune-style Optuna studies for the report tests (the record format the
search writes), so the report can be tested without running a search."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import optuna
from optuna.trial import TrialState, create_trial

from featherface_tune.counter.analytic import count
from featherface_tune.models.config import FeatherFaceConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)

OBJECTIVE_DIRECTIONS = {"macs": "minimize", "latency": "minimize", "latency_ms": "minimize",
                        "proxy_ap": "maximize"}
ATTR = {"macs": "macs", "latency": "latency_ms", "latency_ms": "latency_ms", "proxy_ap": "proxy_ap"}


def record(target: int, tolerance: int, objectives: Sequence[str], input_size=(640, 640),
           max_macs: int | None = None) -> dict[str, Any]:
    return {"version": "1", "target": target, "tolerance": tolerance, "input_size": list(input_size),
            "objectives": list(objectives), "max_macs": max_macs,
            "space": {"neck_channels": [32, 64, 4], "ssh_channels": [32, 80, 4]}, "dcn_macs": "full",
            "reference": None}


def candidate_configs(n: int) -> list[FeatherFaceConfig]:
    necks = range(36, 68, 4)
    sshs = (48, 56, 64, 72)
    out = []
    for neck, ssh in itertools.product(necks, sshs):
        out.append(FeatherFaceConfig(neck_channels=neck, ssh_channels=(ssh, ssh + 8, ssh + 8) if neck % 8 else ssh))
        if len(out) == n:
            break
    return out


def make_study(storage: str | None, name: str = "demo", n: int = 12,
               objectives: Sequence[str] = ("macs",), target: int = 489_000,
               tolerance: int = 25_000, failures: int = 1, input_size=(640, 640),
               repeat: int = 0) -> optuna.Study:
    """A study of `n` complete trials (real counts of real configs) plus `failures` failed ones;
    `repeat` more trials re-run the first configs (a sampler proposing a config twice)."""
    study = optuna.create_study(storage=storage, study_name=name,
                                directions=[OBJECTIVE_DIRECTIONS[o] for o in objectives])
    study.set_user_attr("featherface_tune", record(target, tolerance, objectives, input_size))
    h, w = input_size
    configs = candidate_configs(n)
    for i, cfg in enumerate(configs + configs[:repeat]):
        r = count(cfg, h, w, dcn_macs="full")
        attrs: dict[str, Any] = {
            "config": cfg.to_dict(), "params": r.params, "macs": r.macs,
            "delta": r.params - target, "feasible": abs(r.params - target) <= tolerance,
            "modules": {k: {"params": v.params, "macs": v.macs} for k, v in r.modules.items()},
        }
        # like the search: latency is measured on feasible configs only ("latency" objective),
        # infeasible trials get the worst value
        if "latency_ms" in objectives or ("latency" in objectives and attrs["feasible"]):
            attrs["latency_ms"] = round(5.0 + r.macs / 1e8 + (i % 3) * 0.7, 3)
        if "proxy_ap" in objectives:
            attrs["proxy_ap"] = round(0.5 + 0.3 * (r.params / 600_000) - 0.01 * (i % 4), 4)
        worst = {"latency": float("inf"), "proxy_ap": 0.0}
        values = [float(attrs[ATTR[o]]) if ATTR[o] in attrs else worst[o] for o in objectives]
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=values, user_attrs=attrs))
    for _ in range(failures):
        study.add_trial(create_trial(
            state=TrialState.FAIL, user_attrs={"config": {"neck_channels": 3, "ssh_channels": 6},
                                               "fail_reason": "ssh_channels=6 must be a multiple of 4"}))
    return study
