"""What a search study stores, by name: the contract between `search` and its readers (`report`).

Study user attribute `STUDY_ATTR` (= "featherface_tune") holds a dict with `STUDY_KEYS`:
    version     "1"
    target      int, the parameter target
    tolerance   int, absolute parameters either side of the target
    input_size  [h, w] at which MACs (and latency) are measured
    objectives  list of objective names, e.g. ["macs"] or ["macs", "latency"] or ["proxy_ap"]
    max_macs    int or null
    space       dict, the search space (`SearchSpace.to_dict()`)

Every trial's user attributes (`TRIAL_KEYS`):
    config      the full config, `FeatherFaceConfig.to_dict()`
    params      int, exact parameter count (analytic counter)
    macs        int, MACs at input_size (fvcore convention, DCN dense)
    delta       int, params - target
    feasible    bool, within the tolerance window (and under max_macs if set)
    modules     {group: {"params": int, "macs": int}}
    latency_ms  float, only with the latency objective (feasible trials): median forward time, batch 1,
                at input_size (featherface_tune.deploy.latency)
    latency_spread_ms  float, with latency_ms: interquartile range of the timed runs
    latency_ci  float, with latency_ms: half-width of the median's 95 % confidence interval / median
    latency_runtime  str, with latency_ms: "onnxruntime" or "torch"
    latency_threads  int, with latency_ms: intra-op threads used
    proxy_ap    float, only with proxy training (feasible trials)
    fail_reason str, only on failed trials
    solver      {"in_window": int, "checked": int}: how many completions of the trial's sampled
                knobs the budget solver enumerated and how many were within the window (extra, optional)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

RECORD_VERSION = "1"
DEFAULT_DB = "featherface-tune.db"  # the embedded study store in the working directory
STUDY_ATTR = "featherface_tune"
STUDY_KEYS = ("version", "target", "tolerance", "input_size", "objectives", "max_macs", "space")

CONFIG = "config"
PARAMS = "params"
MACS = "macs"
DELTA = "delta"
FEASIBLE = "feasible"
MODULES = "modules"
LATENCY_MS = "latency_ms"
LATENCY_SPREAD_MS = "latency_spread_ms"
LATENCY_CI = "latency_ci"
LATENCY_RUNTIME = "latency_runtime"
LATENCY_THREADS = "latency_threads"
LATENCY_DETAIL = (LATENCY_SPREAD_MS, LATENCY_CI, LATENCY_RUNTIME, LATENCY_THREADS)
PROXY_AP = "proxy_ap"
FAIL_REASON = "fail_reason"
SOLVER = "solver"
TRIAL_KEYS = (CONFIG, PARAMS, MACS, DELTA, FEASIBLE, MODULES, LATENCY_MS, *LATENCY_DETAIL, PROXY_AP, FAIL_REASON)

# objective name -> (user attribute holding its value, Optuna direction)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "macs": (MACS, "minimize"),
    "latency": (LATENCY_MS, "minimize"),
    "proxy_ap": (PROXY_AP, "maximize"),
}


def window_text(target: int, tolerance: int) -> str:
    """The parameter window as people read it: "489,000" or "489,000 +/- 2,000"."""
    return f"{target:,}" if tolerance == 0 else f"{target:,} +/- {tolerance:,}"


@dataclass(frozen=True)
class StudySpec:
    """The fixed facts of a study: a frozen copy of the `featherface_tune` study attribute."""

    target: int
    tolerance: int
    input_size: tuple[int, int]
    objectives: tuple[str, ...]
    max_macs: int | None
    space: Mapping[str, Any] = field(default_factory=dict)
    version: str = RECORD_VERSION

    def to_attr(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "target": self.target,
            "tolerance": self.tolerance,
            "input_size": list(self.input_size),
            "objectives": list(self.objectives),
            "max_macs": self.max_macs,
            "space": dict(self.space),
        }

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> "StudySpec":
        return cls(target=int(data["target"]), tolerance=int(data["tolerance"]),
                   input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
                   objectives=tuple(data["objectives"]), max_macs=data.get("max_macs"),
                   space=dict(data.get("space") or {}), version=str(data.get("version", RECORD_VERSION)))

    def directions(self) -> list[str]:
        return [OBJECTIVES[o][1] for o in self.objectives]

    def window(self) -> tuple[int, int]:
        return self.target - self.tolerance, self.target + self.tolerance


@dataclass(frozen=True)
class TrialRecord:
    """A frozen copy of one trial's facts, read from an Optuna FrozenTrial."""

    number: int
    state: str
    config: Mapping[str, Any] | None
    params: int | None
    macs: int | None
    delta: int | None
    feasible: bool
    values: tuple[float, ...] | None
    latency_ms: float | None = None
    proxy_ap: float | None = None
    fail_reason: str | None = None
    modules: Mapping[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    latency: Mapping[str, Any] = field(default_factory=dict)  # LATENCY_DETAIL keys present on the trial

    @classmethod
    def from_trial(cls, t: Any) -> "TrialRecord":
        a = copy.deepcopy(dict(t.user_attrs))  # a copy: trials read with deepcopy=False share storage caches
        secs = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            secs = (t.datetime_complete - t.datetime_start).total_seconds()
        values = tuple(float(v) for v in t.values) if t.values is not None else None
        return cls(number=t.number, state=t.state.name, config=a.get(CONFIG), params=a.get(PARAMS),
                   macs=a.get(MACS), delta=a.get(DELTA), feasible=bool(a.get(FEASIBLE, False)),
                   values=values, latency_ms=a.get(LATENCY_MS), proxy_ap=a.get(PROXY_AP),
                   fail_reason=a.get(FAIL_REASON), modules=dict(a.get(MODULES) or {}), seconds=secs,
                   latency={k: a[k] for k in LATENCY_DETAIL if k in a})

    def objective_value(self, name: str) -> float | None:
        v = {"macs": self.macs, "latency": self.latency_ms, "proxy_ap": self.proxy_ap}[name]
        return None if v is None else float(v)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trial": self.number, "state": self.state, "params": self.params,
                               "delta": self.delta, "macs": self.macs, "feasible": self.feasible}
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
            out.update(self.latency)
        if self.proxy_ap is not None:
            out["proxy_ap"] = self.proxy_ap
        if self.fail_reason is not None:
            out["fail_reason"] = self.fail_reason
        out["config"] = dict(self.config) if self.config is not None else None
        return out


