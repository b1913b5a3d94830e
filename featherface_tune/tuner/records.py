"""What a search study stores, by name: the contract between `search` and its readers (`report`).

Study user attribute `STUDY_ATTR` (= "featherface_tune") holds a dict with `STUDY_KEYS`:
    version     "1"
    target      int, the parameter target
    tolerance   int, absolute parameters either side of the target
    input_size  [h, w] at which MACs (and latency) are measured
    objectives  list of objective names, e.g. ["closest"], ["macs", "latency"], ["proxy_ap"]; any other
                name is a Python callable's (minimised, values in the trial's `callables`)
    max_macs    int or null
    space       dict, the search space (`SearchSpace.to_dict()`)
    dcn_macs    "full" (MACs count the DCN offset and modulator convs) or "dense" (they are left out).
                A study stored without it is a legacy study from before full compute: its MACs are
                "dense"; readers say so.
    reference   dict or null: the config the `closest` objective measures distance to
                (`FeatherFaceConfig.to_dict()`), null when `closest` is not an objective
    convention  the counting convention of params and MACs (`featherface_tune.counter.conventions`):
                "numel" (true parameters, fvcore MACs) unless the search asked for another, e.g.
                "thop" (the paper's figures). Absent in studies stored before it existed: "numel".

Every trial's user attributes (`TRIAL_KEYS`):
    config      the full config, `FeatherFaceConfig.to_dict()`
    params      int, exact parameter count (analytic counter, in the study's convention)
    macs        int, MACs at input_size (the study's convention; DCN offset/modulator convs per dcn_macs)
    delta       int, params - target
    feasible    bool, within the tolerance window (and under max_macs if set)
    modules     {group: {"params": int, "macs": int}}
    latency_ms  float, only with the latency objective (feasible trials)
    proxy_ap    float, only with proxy training (feasible trials)
    fail_reason str, only on failed trials
    closest     float, only with the `closest` objective: distance of config to the reference
                (`featherface_tune.tuner.solve.distance`)
    callables   {name: float}, only with Python callable objectives: their values
    sampled     {knob: value}: what Optuna sampled (knobs of `featherface_tune.tuner.space.KNOBS`;
                knobs with one value or in the space's `solve` list are absent); `config` is what was
                built from it
    solver      {"method": "exact set" | "by structure" | "sampled structure", "candidates": int, "switches": int,
                "width": float, "distance": float}: how the sample was repaired - the exact configs
                (or in-window completions) compared, and the distance from the sample to the built
                config (switch knobs changed, width terms; solve.distance). Optional, for inspection.
    enqueued    {"why": "optimum" | "witness", "knobs": {knob: value}}: only on trials the search
                enqueued - a proven optimum of an analytic objective, or the certificate's witness
                (built as given)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

RECORD_VERSION = "1"
DEFAULT_TRIALS = 300
DEFAULT_REFERENCE = "featherface-official"  # the reference of the `closest` objective
DEFAULT_DB = "featherface-tune.db"  # the embedded study store in the working directory
STUDY_ATTR = "featherface_tune"
STUDY_KEYS = ("version", "target", "tolerance", "input_size", "objectives", "max_macs", "space", "dcn_macs",
              "reference", "convention")
LEGACY_DCN_MACS = "dense"  # the convention of studies stored without `dcn_macs`

CONFIG = "config"
PARAMS = "params"
MACS = "macs"
DELTA = "delta"
FEASIBLE = "feasible"
MODULES = "modules"
LATENCY_MS = "latency_ms"
PROXY_AP = "proxy_ap"
FAIL_REASON = "fail_reason"
SOLVER = "solver"
CLOSEST = "closest"
CALLABLES = "callables"
SAMPLED = "sampled"
ENQUEUED = "enqueued"
TRIAL_KEYS = (CONFIG, PARAMS, MACS, DELTA, FEASIBLE, MODULES, LATENCY_MS, PROXY_AP, FAIL_REASON)

# objective name -> (user attribute holding its value, Optuna direction)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "macs": (MACS, "minimize"),
    "latency": (LATENCY_MS, "minimize"),
    "proxy_ap": (PROXY_AP, "maximize"),
    "closest": (CLOSEST, "minimize"),
}
# objectives that depend on the config alone: solved over the exact set rather than sampled
ANALYTIC = ("macs", "closest")


def direction(objective: str) -> str:
    """Optuna direction of an objective; Python callables (any other name) are minimised."""
    return OBJECTIVES[objective][1] if objective in OBJECTIVES else "minimize"


def is_legacy(attr: Mapping[str, Any]) -> bool:
    """True for a study attribute written before full compute (no `dcn_macs`: its MACs are dense)."""
    return "dcn_macs" not in attr


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
    dcn_macs: str = "full"
    reference: Mapping[str, Any] | None = None
    convention: str = "numel"

    def to_attr(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "target": self.target,
            "tolerance": self.tolerance,
            "input_size": list(self.input_size),
            "objectives": list(self.objectives),
            "max_macs": self.max_macs,
            "space": dict(self.space),
            "dcn_macs": self.dcn_macs,
            "reference": dict(self.reference) if self.reference is not None else None,
            "convention": self.convention,
        }

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> "StudySpec":
        return cls(target=int(data["target"]), tolerance=int(data["tolerance"]),
                   input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
                   objectives=tuple(data["objectives"]), max_macs=data.get("max_macs"),
                   space=dict(data.get("space") or {}), version=str(data.get("version", RECORD_VERSION)),
                   dcn_macs=str(data.get("dcn_macs", LEGACY_DCN_MACS)),
                   reference=dict(data["reference"]) if data.get("reference") else None,
                   convention=str(data.get("convention", "numel")))

    def directions(self) -> list[str]:
        return [direction(o) for o in self.objectives]

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
    closest: float | None = None
    callables: Mapping[str, float] = field(default_factory=dict)
    sampled: Mapping[str, Any] | None = None

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
                   closest=a.get(CLOSEST), callables=dict(a.get(CALLABLES) or {}), sampled=a.get(SAMPLED))

    def objective_value(self, name: str) -> float | None:
        known = {"macs": self.macs, "latency": self.latency_ms, "proxy_ap": self.proxy_ap, "closest": self.closest}
        v = known[name] if name in known else self.callables.get(name)
        return None if v is None else float(v)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trial": self.number, "state": self.state, "params": self.params,
                               "delta": self.delta, "macs": self.macs, "feasible": self.feasible}
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        if self.proxy_ap is not None:
            out["proxy_ap"] = self.proxy_ap
        if self.closest is not None:
            out["closest"] = self.closest
        if self.callables:
            out["callables"] = dict(self.callables)
        if self.fail_reason is not None:
            out["fail_reason"] = self.fail_reason
        if self.sampled is not None:
            out["sampled"] = dict(self.sampled)
        out["config"] = dict(self.config) if self.config is not None else None
        return out


