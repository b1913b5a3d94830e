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
    latency_ms  float, only with the latency objective (feasible trials): median forward time, batch 1,
                at input_size (featherface_tune.deploy.latency)
    latency_spread_ms  float, with latency_ms: interquartile range of the timed runs
    latency_ci  float, with latency_ms: half-width of the median's 95 % confidence interval / median
    latency_runtime  str, with latency_ms: "onnxruntime" or "torch"
    latency_threads  int, with latency_ms: intra-op threads used
    latency_ci_ms  [lo, hi], with latency_ms: the median's 95 % confidence interval in ms
    latency_predicted_ms  float, with the latency objective solved under the latency model: the
                model's prediction (per-block tables + fitted overhead, `deploy.latency_table`)
    latency_model  {"key": str, "median_abs_pct_error": float, "kendall_tau": float, ...}, on the
                trials of a model-latency study: which table predicted, and its validation
    proxy_ap    float, only with proxy training (feasible trials)
    fail_reason str, only on failed trials
    closest     float, only with the `closest` objective: distance of config to the reference
                (`featherface_tune.tuner.space.distance`)
    callables   {name: float}, only with Python callable objectives: their values
    sampled     {knob: value}: what Optuna sampled (knobs of `featherface_tune.tuner.space.KNOBS`;
                knobs with one value or in the space's `solve` list are absent); `config` is what was
                built from it
    solver      {"method": "exact set" | "by structure" | "sampled structure", "candidates": int, "switches": int,
                "width": float, "distance": float}: how the sample was repaired - the exact configs
                (or in-window completions) compared, and the distance from the sample to the built
                config (switch knobs changed, width terms; space.distance). Optional, for inspection.
    enqueued    {"why": "optimum" | "witness", "knobs": {knob: value}}: only on trials the search
                enqueued - a proven optimum of an analytic objective, or the certificate's witness
                (built as given)
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from featherface_tune.counter import conventions
from featherface_tune.counter.conventions import TRUE, Convention, CountedIn
from featherface_tune.tuner import registry

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
LATENCY_SPREAD_MS = "latency_spread_ms"
LATENCY_CI = "latency_ci"
LATENCY_RUNTIME = "latency_runtime"
LATENCY_THREADS = "latency_threads"
LATENCY_CI_MS = "latency_ci_ms"
LATENCY_PREDICTED_MS = "latency_predicted_ms"
LATENCY_MODEL = "latency_model"
LATENCY_DETAIL = (LATENCY_SPREAD_MS, LATENCY_CI, LATENCY_RUNTIME, LATENCY_THREADS, LATENCY_CI_MS)
PROXY_AP = "proxy_ap"
FAIL_REASON = "fail_reason"
SOLVER = "solver"
CLOSEST = "closest"
CALLABLES = "callables"
SAMPLED = "sampled"
ENQUEUED = "enqueued"
TRIAL_KEYS = (CONFIG, PARAMS, MACS, DELTA, FEASIBLE, MODULES, LATENCY_MS, *LATENCY_DETAIL, PROXY_AP, FAIL_REASON)

# objective name -> (user attribute holding its value, Optuna direction): the registry's live view
OBJECTIVES = registry.OBJECTIVES
# the built-in objectives that depend on the config alone (`registry.kind(name) == "analytic"` says it for any)
ANALYTIC = ("macs", "closest")
direction = registry.direction


def is_legacy(attr: Mapping[str, Any]) -> bool:
    """True for a study attribute written before full compute (no `dcn_macs`: its MACs are dense)."""
    return "dcn_macs" not in attr


def window_text(target: int, tolerance: int) -> str:
    """The parameter window as people read it, everywhere it is shown: "489,000", or
    "489,000 ± 2,000 (487,000..491,000)"."""
    if tolerance == 0:
        return f"{target:,}"
    return f"{target:,} ± {tolerance:,} ({target - tolerance:,}..{target + tolerance:,})"


@dataclass(frozen=True)
class StudySpec(CountedIn):
    """The fixed facts of a study: a frozen copy of the `featherface_tune` study attribute.
    `counting` (how params and MACs are counted) is stored as its two keys, `convention` and
    `dcn_macs` (`Convention.to_attr`)."""

    target: int
    tolerance: int
    input_size: tuple[int, int]
    objectives: tuple[str, ...]
    max_macs: int | None
    space: Mapping[str, Any] = field(default_factory=dict)
    version: str = RECORD_VERSION
    counting: Convention = TRUE
    reference: Mapping[str, Any] | None = None

    def to_attr(self) -> dict[str, Any]:
        stored = self.counting.to_attr()
        return {
            "version": self.version,
            "target": self.target,
            "tolerance": self.tolerance,
            "input_size": list(self.input_size),
            "objectives": list(self.objectives),
            "max_macs": self.max_macs,
            "space": dict(self.space),
            "dcn_macs": stored["dcn_macs"],
            "reference": dict(self.reference) if self.reference is not None else None,
            "convention": stored["convention"],
        }

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> "StudySpec":
        return cls(target=int(data["target"]), tolerance=int(data["tolerance"]),
                   input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
                   objectives=tuple(data["objectives"]), max_macs=data.get("max_macs"),
                   space=dict(data.get("space") or {}), version=str(data.get("version", RECORD_VERSION)),
                   counting=conventions.from_attr(data, legacy_dcn_macs=LEGACY_DCN_MACS),
                   reference=dict(data["reference"]) if data.get("reference") else None)

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
    objectives: tuple[str, ...] = ()  # the study's objectives, in the order of `values`
    latency: Mapping[str, Any] = field(default_factory=dict)  # LATENCY_DETAIL keys present on the trial
    latency_predicted_ms: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)  # registered objectives' attributes not above

    @classmethod
    def from_trial(cls, t: Any, spec: "StudySpec | None" = None) -> "TrialRecord":
        """The one reader of a trial's user attributes (search, report and the gate use it). It
        tolerates attributes of the wrong type (a hand-edited or foreign study): they read as
        missing. With `spec`, a missing `delta` and `feasible` are derived from the window."""
        a = copy.deepcopy(dict(t.user_attrs))  # a copy: trials read with deepcopy=False share storage caches
        secs = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            secs = (t.datetime_complete - t.datetime_start).total_seconds()
        values = tuple(float(v) for v in t.values) if t.values is not None else None
        params, macs, delta = as_int(a.get(PARAMS)), as_int(a.get(MACS)), as_int(a.get(DELTA))
        feasible = a.get(FEASIBLE)
        if spec is not None:
            if delta is None and params is not None:
                delta = params - spec.target
            if not isinstance(feasible, bool):
                feasible = (delta is not None and abs(delta) <= spec.tolerance and macs is not None
                            and (spec.max_macs is None or macs <= spec.max_macs))
        return cls(number=t.number, state=t.state.name, config=_mapping(a.get(CONFIG)), params=params,
                   macs=macs, delta=delta, feasible=feasible is True, values=values,
                   latency_ms=as_float(a.get(LATENCY_MS)), proxy_ap=as_float(a.get(PROXY_AP)),
                   fail_reason=str(a[FAIL_REASON]) if a.get(FAIL_REASON) else None,
                   modules=_mapping(a.get(MODULES)) or {}, seconds=secs, closest=as_float(a.get(CLOSEST)),
                   callables=_mapping(a.get(CALLABLES)) or {}, sampled=_mapping(a.get(SAMPLED)),
                   objectives=tuple(spec.objectives) if spec is not None else (),
                   latency={k: a[k] for k in LATENCY_DETAIL if k in a},
                   latency_predicted_ms=as_float(a.get(LATENCY_PREDICTED_MS)),
                   extra={attr: v for attr, _ in OBJECTIVES.values()
                          if attr not in _KNOWN_ATTRS and (v := as_float(a.get(attr))) is not None})

    def objective_value(self, name: str) -> float | None:
        """The value the search ranks by: the recorded attribute (the registry's `attr`; a model
        latency's prediction where the trial was not timed; a callable's value), else the trial's
        Optuna value for that objective, rounded as the objective says (`registry`); None when
        neither is a finite number."""
        known = {MACS: self.macs, LATENCY_MS: self.latency_ms, PROXY_AP: self.proxy_ap, CLOSEST: self.closest,
                 LATENCY_PREDICTED_MS: self.latency_predicted_ms}
        obj = registry.get(name)
        attr = obj.attr if obj is not None else name
        if attr == LATENCY_MS and self.latency_ms is None:  # a solved front point the finalists left untimed
            attr = LATENCY_PREDICTED_MS
        v = known[attr] if attr in known else self.extra.get(attr, self.callables.get(name))
        if v is None and self.values is not None and name in self.objectives:
            i = self.objectives.index(name)
            v = self.values[i] if i < len(self.values) else None
        out = as_float(v)
        return obj.rounded(out) if obj is not None and out is not None else out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trial": self.number, "state": self.state, "params": self.params,
                               "delta": self.delta, "macs": self.macs, "feasible": self.feasible}
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
            out.update(self.latency)
        if self.latency_predicted_ms is not None:
            out[LATENCY_PREDICTED_MS] = self.latency_predicted_ms
        if self.proxy_ap is not None:
            out["proxy_ap"] = self.proxy_ap
        out.update(self.extra)
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


_KNOWN_ATTRS = (MACS, LATENCY_MS, PROXY_AP, CLOSEST)


def as_int(v: Any) -> int | None:
    """An integer attribute (numpy's too), or None: missing, a bool, a fraction, not finite, not a number."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real) and math.isfinite(float(v)) and float(v).is_integer():
        return int(float(v))
    return None


def as_float(v: Any) -> float | None:
    """A finite number as float, or None."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        return None
    return float(v)


def _mapping(v: Any) -> dict[str, Any] | None:
    return dict(v) if isinstance(v, Mapping) else None
