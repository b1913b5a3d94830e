"""Objectives of the budget search, and the trial function that ties space, solver and objectives.

Objectives are registered classes (`featherface_tune.tuner.registry`): `closest` and `macs` (analytic),
`latency` (predicted by the per-block latency model and solved, `featherface_tune.deploy.latency_table`;
or measured per trial, `featherface_tune.deploy.latency`), `proxy_ap` (validation AP after proxy
training, maximise; `featherface_tune.training.proxy`) and Python callables `f(config) -> float`
(minimise). The budget itself is a constraint (`trial.set_constraint`), never an objective: a trial is
feasible when |params - target| <= tolerance (and MACs <= max_macs). Expensive objectives are only
evaluated on feasible configs; infeasible trials get the worst value (inf, or 0 AP) and a positive
constraint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from featherface_tune.counter.analytic import count
from featherface_tune.counter.conventions import TRUE
from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.tuner import records as R
from featherface_tune.tuner import registry
from featherface_tune.tuner.solve import Repairer, prove
from featherface_tune.tuner.space import SearchSpace, config_from_knobs, knobs_from_config

from featherface_tune.training.spec import Fidelity  # the proxy's run spec: torch-free

OBJECTIVE_ALIASES = registry.aliases()  # the built-ins' names and aliases (the registry holds them all)
Callable_ = Callable[[FeatherFaceConfig], float]


class TrialFailed(Exception):
    """A trial could not be evaluated; its `fail_reason` is recorded and the search goes on."""


def parse_objectives(text: str | None, proxy: bool) -> tuple[str, ...]:
    """`closest`, `macs`, `latency`, `macs,latency`, ... (default: `closest`, or `proxy_ap` with proxy data)."""
    if text is None:
        return ("proxy_ap",) if proxy else ("closest",)
    if not text.strip():
        raise InputError(field="objective", value=text,
                         rule="empty; use closest, macs, latency or proxy (or leave it out for the default)")
    out: list[str] = []
    for part in text.split(","):
        obj = registry.get(part)
        if obj is None:
            raise InputError(field="objective", value=part.strip(),
                             rule=f"unknown objective; use {', '.join(registry.names())} (comma-separated for several)")
        name = obj.name
        if name in out:
            raise InputError(field="objective", value=text.strip(), rule=f"{name} is named twice")
        out.append(name)
    if "proxy_ap" in out and not proxy:
        typed = next((p.strip() for p in text.split(",") if registry.get(p.strip()) is registry.get("proxy_ap")),
                     "proxy_ap")
        raise InputError(field="objective", value=typed, rule="needs {proxy_data} DIR", refs=("proxy_data",))
    if proxy and "proxy_ap" not in out:
        out.append("proxy_ap")
    return tuple(out)


# ---- latency ----------------------------------------------------------------------------------

LATENCY_SECONDS_ENV = "FEATHERFACE_TUNE_LATENCY_SECONDS"  # the time cap of one config's measurement


def latency_time_cap() -> float:
    """Seconds one config's latency measurement may take (default 30): $FEATHERFACE_TUNE_LATENCY_SECONDS
    lowers it, e.g. where latency only needs to rank roughly, or a test needs a sampled objective."""
    import math
    import os

    text = os.environ.get(LATENCY_SECONDS_ENV, "").strip()
    if not text:
        return 30.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise InputError(f"{LATENCY_SECONDS_ENV}={text!r}: give seconds, more than 0 and at most 3600")
    return value


def measure_latency(cfg: FeatherFaceConfig, h: int, w: int, runtime: str | None = None,
                    threads: int = 1, rel_ci: float = 0.03, max_seconds: float | None = None) -> Any:
    """Forward latency of `cfg` at h x w (`featherface_tune.deploy.latency.measure`): a `Latency`
    with the median, its 95 % interval and the spread, in onnxruntime (default when installed) or torch.
    `max_seconds` caps the measurement (default: `latency_time_cap()`)."""
    from featherface_tune.deploy.latency import measure

    cap = latency_time_cap() if max_seconds is None else max_seconds
    return measure(cfg, h, w, runtime, threads, rel_ci, cap)


# ---- proxy training ----------------------------------------------------------------------------

ProxyFn = Callable[[FeatherFaceConfig, Path, dict, Any], float]


def load_proxy(data_dir: Path, device: str = "auto") -> ProxyFn:
    """Import `proxy_objective` lazily (bound to `device`); a one-line InputError if it or the data
    is missing."""
    if not Path(data_dir).is_dir():
        raise InputError(field="proxy_data", value=Path(data_dir), rule="not a directory")
    try:
        from featherface_tune.training.proxy import proxy_objective  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or an error while importing its dependencies
        from featherface_tune.extras import MissingExtra, missing_extra

        if (hint := missing_extra(exc)) is not None:
            raise MissingExtra(f"proxy training {hint}") from None
        raise InputError(field="proxy_data", rule="needs proxy training (featherface_tune.training.proxy), which "
                         f"cannot be imported: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         ) from None
    if device in (None, "auto"):  # proxy_objective's own default
        return proxy_objective  # type: ignore[no-any-return]
    import functools

    return functools.partial(proxy_objective, device=device)


# ---- the trial function -----------------------------------------------------------------------

@dataclass
class BudgetObjective:
    """Optuna objective: sample every knob (space) -> repair to the nearest exact config (solver) ->
    count -> objectives.

    Works with `optuna.trial.Trial` and `optuna.trial.FixedTrial`. Records the `records.TRIAL_KEYS`
    user attributes on the trial (plus `sampled`, `solver`, and `closest` / `callables` where they
    apply). Failures raise `TrialFailed` after recording `fail_reason`. `repairer` defaults to one
    built from a fresh proof of the space; `callables` maps objective names of the spec to functions.
    """

    space: SearchSpace
    spec: R.StudySpec
    proxy: ProxyFn | None = None
    proxy_data: Path | None = None
    fidelity: Fidelity | None = None  # None: the proxy's defaults
    latency_runtime: str | None = None  # onnxruntime (default when installed) or torch
    latency_threads: int = 1
    repairer: Repairer | None = None
    callables: dict[str, Callable_] = field(default_factory=dict)
    latency_model: Any = None  # a `deploy.latency_table.LatencyModel`: latency is solved, not sampled
    _cache: dict[FeatherFaceConfig, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = self.spec
        if self.repairer is None:
            size = (spec.input_size[0], spec.input_size[1])
            proof = prove(self.space, spec.target, spec.tolerance, input_size=size, counting=spec.counting,
                          max_macs=spec.max_macs)
            self.repairer = Repairer(self.space, spec.target, spec.tolerance, size, spec.counting,
                                     spec.max_macs, proof.exact, proof.hit_structures)
        self.reference = (knobs_from_config(FeatherFaceConfig(**spec.reference))
                          if spec.reference is not None else None)
        self.context = registry.Context(spec.input_size, spec.counting, self.reference,
                                        self.latency_model)

    def _solvable(self, obj: registry.Objective) -> bool:
        """Analytic objectives always; model latency when a latency model was given."""
        return obj.kind == "analytic" or (obj.kind == "model" and self.latency_model is not None)

    def _timed_finalist(self, trial: Any, pinned: Mapping[str, Any] | None, predicted: float) -> float:
        """A finalist's whole-model timing (measured before it was enqueued, `api`): recorded, and its
        median is the trial's latency; other trials keep the model's prediction."""
        timed = (pinned or {}).get("latency")
        model = self.latency_model
        if model is not None:
            trial.set_user_attr(R.LATENCY_MODEL, model.summary())
        if not timed:
            return predicted
        trial.set_user_attr(R.LATENCY_MS, float(timed["median_ms"]))
        trial.set_user_attr(R.LATENCY_CI_MS, [float(v) for v in timed["ci_ms"]])
        trial.set_user_attr(R.LATENCY_CI, float(timed["rel_ci"]))
        trial.set_user_attr(R.LATENCY_SPREAD_MS, float(timed["iqr_ms"]))
        trial.set_user_attr(R.LATENCY_RUNTIME, str(timed["runtime"]))
        trial.set_user_attr(R.LATENCY_THREADS, int(timed["threads"]))
        return float(timed["median_ms"])

    def __call__(self, trial: Any) -> float | list[float]:
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:
            _safe_attr(trial, R.FAIL_REASON, "interrupted")
            raise
        except TrialFailed as exc:  # every deliberate failure leaves its reason on the trial
            _safe_attr(trial, R.FAIL_REASON, str(exc))
            raise
        except InputError as exc:  # bad data or options (e.g. no annotations): stop the search, one line
            _safe_attr(trial, R.FAIL_REASON, f"InputError: {exc}")
            raise
        except Exception as exc:  # any other failure is recorded and the search goes on
            import optuna

            if isinstance(exc, optuna.TrialPruned):
                raise
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
            _safe_attr(trial, R.FAIL_REASON, reason)
            raise TrialFailed(reason) from exc

    def _evaluate(self, trial: Any) -> float | list[float]:
        spec = self.spec
        sampled = self.space.sample(trial)
        trial.set_user_attr(R.SAMPLED, {k: sampled[k] for k in self.space.sampled if k in sampled})
        assert self.repairer is not None
        pinned = (getattr(trial, "user_attrs", None) or {}).get(R.ENQUEUED)
        # an enqueued exact config (an optimum or a witness) is built as it is, free knobs included
        sol = self.repairer.repair(pinned["knobs"], free=()) if pinned else self.repairer.repair(sampled)
        if sol is None:
            raise TrialFailed("no config of the space lies within the window")
        try:
            cfg = config_from_knobs(sol.knobs)
        except ConfigError as exc:
            raise TrialFailed(f"ConfigError: {exc}") from None
        h, w = spec.input_size
        res = count(cfg, h, w, convention=spec.counting)
        if res.params != sol.params or res.macs != sol.macs:
            raise TrialFailed(f"solver predicted {sol.params} params / {sol.macs} MACs but the counter "
                              f"gives {res.params} / {res.macs}")
        delta = res.params - spec.target
        params_ok = abs(delta) <= spec.tolerance
        macs_ok = spec.max_macs is None or res.macs <= spec.max_macs
        feasible = params_ok and macs_ok
        trial.set_user_attr(R.CONFIG, cfg.to_dict())
        trial.set_user_attr(R.PARAMS, res.params)
        trial.set_user_attr(R.MACS, res.macs)
        trial.set_user_attr(R.DELTA, delta)
        trial.set_user_attr(R.FEASIBLE, feasible)
        trial.set_user_attr(R.MODULES, {k: {"params": c.params, "macs": c.macs} for k, c in res.modules.items()})
        trial.set_user_attr(R.SOLVER, sol.to_json())
        trial.set_constraint("params", float(abs(delta) - spec.tolerance))
        if spec.max_macs is not None:
            trial.set_constraint("macs", float(res.macs - spec.max_macs))
        values: list[float] = []
        solved: dict[str, float] = {}
        for name in spec.objectives:  # analytic objectives (and model latency): a function of the config
            obj = registry.get(name)
            if obj is None or not self._solvable(obj):
                continue
            if obj.name == "macs":
                solved[name] = float(res.macs)
                continue
            try:
                solved[name] = obj.value(cfg, self.context)
            except ValueError:  # e.g. closest without a reference
                solved[name] = math.inf
                continue
            trial.set_user_attr(R.LATENCY_PREDICTED_MS if obj.name == "latency" else obj.attr, solved[name])
        if "latency" in solved:
            solved["latency"] = self._timed_finalist(trial, pinned, solved["latency"])
        expensive: dict[str, float] = {}
        if feasible and any(n not in solved and n != "macs" for n in spec.objectives):
            expensive = self._expensive(trial, cfg)
        for name in spec.objectives:
            if name in solved:
                values.append(solved[name])
            elif name == "proxy_ap":
                values.append(expensive.get("proxy_ap", 0.0))
            else:  # sampled latency, callables
                values.append(expensive.get(name, math.inf))
        return values[0] if len(values) == 1 else values

    def _fidelity(self) -> Fidelity:
        if self.fidelity is None:
            self.fidelity = Fidelity()
        return self.fidelity

    def _expensive(self, trial: Any, cfg: FeatherFaceConfig) -> dict[str, Any]:
        """Latency / proxy AP of a feasible config (reused when this worker already measured it)."""
        got = dict(self._cache.get(cfg, {}))
        h, w = self.spec.input_size
        if "latency" in self.spec.objectives and "latency" not in got and self.latency_model is None:
            lat = measure_latency(cfg, h, w, self.latency_runtime, self.latency_threads)
            got.update({"latency": lat.median_ms, "latency_spread": lat.iqr_ms, "latency_ci": lat.rel_ci,
                        "latency_runtime": lat.runtime, "latency_threads": lat.threads})
        if "proxy_ap" in self.spec.objectives and "proxy_ap" not in got:
            if self.proxy is None or self.proxy_data is None:
                raise TrialFailed("proxy objective without proxy training")
            report_to = trial if len(self.spec.objectives) == 1 and _is_real_trial(trial) else None
            ap = float(self.proxy(cfg, self.proxy_data, self._fidelity().to_dict(), report_to))
            if not math.isfinite(ap):
                raise TrialFailed(f"proxy training returned {ap}")
            got["proxy_ap"] = ap
        for name, fn in self.callables.items():
            if name in self.spec.objectives and name not in got:
                v = fn(cfg)
                try:
                    val = math.nan if isinstance(v, bool) else float(v)
                except (TypeError, ValueError):
                    val = math.nan
                if not math.isfinite(val):
                    raise TrialFailed(f"objective {name!r} returned {v!r} (need a finite number)")
                got[name] = val
        self._cache[cfg] = got
        if "latency" in got:
            trial.set_user_attr(R.LATENCY_MS, got["latency"])
            trial.set_user_attr(R.LATENCY_SPREAD_MS, got["latency_spread"])
            trial.set_user_attr(R.LATENCY_CI, got["latency_ci"])
            trial.set_user_attr(R.LATENCY_RUNTIME, got["latency_runtime"])
            trial.set_user_attr(R.LATENCY_THREADS, got["latency_threads"])
        if "proxy_ap" in got:
            trial.set_user_attr(R.PROXY_AP, got["proxy_ap"])
        mine = {k: v for k, v in got.items() if k in self.callables}
        if mine:
            trial.set_user_attr(R.CALLABLES, mine)
        return got


def _is_real_trial(trial: Any) -> bool:
    import optuna

    return isinstance(trial, optuna.trial.Trial)


def _safe_attr(trial: Any, key: str, value: Any) -> None:
    try:
        trial.set_user_attr(key, value)
    except Exception:  # pragma: no cover - the storage may be gone during an interrupt
        pass


def summarize(spec: R.StudySpec) -> str:
    extra = f", MACs <= {spec.max_macs:,}" if spec.max_macs is not None else ""
    return (f"params = {R.window_text(spec.target, spec.tolerance)}{extra}; objectives: {', '.join(spec.objectives)}; "
            f"MACs {spec.dcn_macs}" + (f"; counted as {spec.convention}" if spec.counting.name != TRUE.name else ""))
