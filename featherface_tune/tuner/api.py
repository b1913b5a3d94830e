"""The budget search as a Python API: `featherface_tune.search(target, ...)`.

    from featherface_tune import search

    res = search(489_000)                                   # closest to FeatherFace, proven optimum
    res.best[0].config, res.best[0].macs                    # a FeatherFaceConfig and its MACs
    res = search(489_000, objective=lambda cfg: -min(cfg.ssh_widths), trials=60)  # maximise: negate

Analytic objectives (`macs`, `closest`) are solved over every exact config of the space (the proof lists
them) and the top ones are enqueued as the study's trials, whatever `trials` is. Other objectives
(`latency`, `proxy_ap`, callables, and Pareto fronts that include one) are sampled: Optuna samples every
knob, the solver repairs each sample to the nearest exact config (`solve.Repairer`), and the
certificate's witness is the first trial. `featherface-tune search` is a thin layer over `search`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.config import FeatherFaceConfig, from_mapping
from featherface_tune.tuner import records as R
from featherface_tune.training.proxy import Fidelity
from featherface_tune.tuner.objectives import BudgetObjective, ProxyFn, parse_objectives
from featherface_tune.counter.analytic import check_dcn_macs
from featherface_tune.models.config import DEFAULT_INPUT
from featherface_tune.counter.conventions import get_convention
from featherface_tune.tuner.solve import (
    MAX_EXACT, Certificate, NoConfigInWindow, Proof, Repairer, check_reachable, check_values,
    prove,
)
from featherface_tune.tuner.space import KNOBS, SearchSpace, applies, default_space, knobs_from_config, load_space

DEFAULT_TRIALS = R.DEFAULT_TRIALS
DEFAULT_REFERENCE = R.DEFAULT_REFERENCE
Objective = str | Callable[[FeatherFaceConfig], float]


@dataclass(frozen=True)
class Row:
    """One feasible config of the study, best first in `SearchResult.best`."""

    trial: int
    config: FeatherFaceConfig
    params: int
    macs: int
    delta: int
    value: float | tuple[float, ...]  # the objective value (a tuple with several objectives)
    record: R.TrialRecord


@dataclass
class SearchResult:
    """What `search` found. `best`: distinct feasible configs of the whole study, best first (the
    ranking of `featherface_tune.tuner.ranking`); `pareto`: the front, with several objectives;
    `solved`: {"exact_configs": N, "optimal": True, "seconds": s} when an analytic objective was solved
    over all N exact configs, else None; `trials`: this call's trial numbers."""

    best: list[Row]
    pareto: list[Row]
    certificate: Certificate
    study: Any
    spec: R.StudySpec
    name: str
    storage: str
    solved: dict[str, Any] | None
    records: list[R.TrialRecord]
    trials: list[int] = field(default_factory=list)
    seconds: float = 0.0
    first_hit: dict[str, Any] | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def search(target: int, *, space: SearchSpace | str | Path | None = None,
           objective: Objective | Sequence[Objective] | None = None, trials: int = DEFAULT_TRIALS,
           storage: str | None = None, tolerance: int = 0, max_macs: int | None = None,
           input_size: tuple[int, int] = DEFAULT_INPUT, dcn_macs: str = "full", convention: str = "numel",
           reference: str | Path | FeatherFaceConfig = DEFAULT_REFERENCE, study: str | None = None,
           seed: int | None = None, timeout: float | None = None, top: int = 10,
           proxy: ProxyFn | None = None, proxy_data: Path | None = None, fidelity: Fidelity | None = None,
           callbacks: Sequence[Callable[[Any, Any], None]] = (), note: Callable[[str], None] | None = None,
           on_start: Callable[[int, int], None] | None = None, pruner: str = "median",
           latency_runtime: str | None = None,
           latency_threads: int = 1) -> SearchResult:
    """Find configs with `target` parameters (+/- `tolerance`), best first by `objective`.

    `space`: a SearchSpace, a TOML space file, or None (the default space). `objective`: "closest"
    (default without proxy training; distance to `reference`, a preset name, config file or config),
    "macs", "latency", "proxy_ap", a callable `f(config) -> float` to minimise (to maximise, return
    the negative), or a list of them (a Pareto front). A callable that raises or returns NaN fails its
    trial (the reason is recorded) and the search goes on. `storage`: an Optuna storage URL (see
    `featherface_tune.tuner.study.open_storage`), None to keep everything in memory. `dcn_macs`: "full"
    counts the DCN offset and modulator convs in MACs, "dense" leaves them out. `convention`: how
    params and MACs are counted (`featherface_tune.counter.conventions`; "thop" lands on the figure
    thop reports for the official code, the paper's convention). `note` receives the
    one-line diagnostics (the CLI prints them on stderr); `on_start(done, total)` is called before the
    trials run and `callbacks` after each (Optuna callbacks). `pruner`: median, hyperband (epochs as the
    resource) or none, for a single proxy objective (training.proxy.make_pruner). `latency_threads`:
    CPU threads of the latency objective, `latency_runtime` its runtime: "onnxruntime" (default when
    installed) or "torch" (`featherface_tune.deploy.latency`). Raises NoConfigInWindow (with `.certificate`)
    when the space provably holds no config in the window.
    """
    from featherface_tune.tuner import study as S

    t_start = time.perf_counter()
    say = note or (lambda text: None)
    notes: list[str] = []

    def tell(text: str) -> None:
        notes.append(text)
        say(text)

    # errors name the argument (field), the value and the rule; the command layer names its flag
    if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
        raise InputError(field="target", value=target, rule="must be a positive parameter count")
    if tolerance < 0:
        raise InputError(field="tolerance", value=tolerance, rule="must not be negative")
    if max_macs is not None and max_macs <= 0:
        raise InputError(field="max_macs", value=max_macs, rule="must be positive")
    if trials < 1:
        raise InputError(field="trials", value=trials, rule="must be at least 1")
    if timeout is not None and not timeout > 0:
        raise InputError(field="timeout", value=timeout, rule="must be positive seconds")
    if top < 1:
        raise InputError(field="top", value=top, rule="must be at least 1")
    check_dcn_macs(dcn_macs)
    try:
        get_convention(convention, dcn_macs)
    except ConfigError as exc:
        raise InputError(field="convention", rule=str(exc)) from None
    h, w = input_size
    sp = _space(space)
    names, callables = _objectives(objective, proxy is not None)
    if "latency" in names:
        from featherface_tune.deploy.latency import check_runtime

        latency_runtime = check_runtime(latency_runtime)
        if latency_threads < 1:
            raise InputError(field="latency_threads", value=latency_threads, rule="must be at least 1")
        tell(f"latency: {latency_runtime}, {latency_threads} thread(s), batch 1 at {h}x{w}, "
             "median to +/-3 % (95 %)")
    ref_cfg = _reference(reference, sp, tell) if "closest" in names else None

    proof = prove(sp, target, tolerance, input_size=(h, w), dcn_macs=dcn_macs, max_macs=max_macs,
                  convention=convention)
    cert = proof.certificate
    check_values(cert)
    try:
        check_reachable(cert)
        _check_max_macs(proof, max_macs)
    except NoConfigInWindow as exc:
        exc.certificate = cert  # type: ignore[attr-defined]
        raise
    window = R.window_text(target, tolerance)
    if cert.complete:
        tell(f"space: {cert.configs:,} valid configs; {cert.in_window:,} with {window} params "
             f"(proof: {cert.evidence()})")
    else:
        tell(f"space: more than {cert.structures:,} structures; too large to count exhaustively, "
             "searching without a proof of reachability")

    spec = R.StudySpec(target, tolerance, (h, w), names, max_macs, sp.to_dict(), dcn_macs=dcn_macs,
                       reference=ref_cfg.to_dict() if ref_cfg is not None else None, convention=convention)
    if storage is None:
        import optuna

        store, where = optuna.storages.InMemoryStorage(), "memory"
    else:
        store, info = S.open_storage(storage)
        where = f"{info.url} ({info.kind})"
    name = study or S.default_study_name(spec)
    trial_pruner = None
    if proxy is not None and len(names) == 1:
        from featherface_tune.training.proxy import make_pruner

        trial_pruner = make_pruner(pruner, (fidelity or Fidelity()).epochs)
    st = S.open_study(store, name, spec, S.make_sampler(seed), trial_pruner)
    if R.is_legacy(st.user_attrs.get(R.STUDY_ATTR, {})):
        tell(f"study {name!r} is a legacy study (stored before full compute): its MACs are dense")
    repairer = Repairer(sp, target, tolerance, (h, w), dcn_macs, max_macs, proof.exact, proof.hit_structures,
                        convention)
    fn = BudgetObjective(sp, spec, proxy, proxy_data, fidelity or Fidelity(), latency_threads=latency_threads,
                         latency_runtime=latency_runtime,
                         repairer=repairer,
                         callables=callables)

    before = S.counted_trials(st)
    mine: list[int] = []
    first_hit: dict[str, Any] = {}
    hit = next((t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
                and t.user_attrs.get(R.FEASIBLE)), None)
    if hit is not None:
        first_hit = {"trial": hit.number, "seconds": None, "resumed": True}

    def on_trial(_st: Any, t: Any) -> None:
        mine.append(t.number)
        if not first_hit and t.state.name == "COMPLETE" and t.user_attrs.get(R.FEASIBLE):
            first_hit.update({"trial": t.number, "seconds": round(time.perf_counter() - t_start, 3),
                              "resumed": False})

    analytic = all(n in R.ANALYTIC for n in names)
    solved = None
    interrupted = False
    if analytic and proof.exact is not None:
        t0 = time.perf_counter()
        picks = _optima(proof, names, ref_cfg, top)
        solved = {"exact_configs": len(proof.exact), "optimal": True, "seconds": round(time.perf_counter() - t0, 3)}
        todo = _enqueue(st, [proof.exact.knobs(i) for i in picks], sp, "optimum")
        tell(f"{' and '.join(names)}: optimal over all {len(proof.exact):,} exact configs "
             f"(solved in {solved['seconds']:.2f} s); {todo} optimum trials to record"
             + (", --trials ignored" if trials != DEFAULT_TRIALS else ""))
        runs = todo
    else:
        if analytic:
            tell(f"the window holds {cert.in_window:,} configs, more than the {MAX_EXACT:,} listed explicitly: "
                 "sampling instead (no proof of optimality)")
        if cert.example is not None and hit is None:  # witness first: a provably feasible trial
            _enqueue(st, [knobs_from_config(FeatherFaceConfig(**cert.example.config))], sp, "witness")
        runs = None
    total = trials if runs is None else before + runs
    tell(f"study {name!r} on {where}: {_summary(spec)}; {before} of {total} trials done")
    if on_start is not None:
        on_start(before, total)
    try:
        if runs is None:
            S.run(st, fn, trials, timeout, [on_trial, *callbacks])
        elif runs:
            S.run_queued(st, fn, runs, [on_trial, *callbacks])
    except KeyboardInterrupt:
        interrupted = True

    records = S.trial_records(st)
    ranks = S.rank_feasible(records, names)
    rows = [_row(r, names) for _, r in ranks]
    return SearchResult(best=rows, pareto=[_row(r, names) for k, r in ranks if k == 0] if len(names) > 1 else [],
                        certificate=cert, study=st, spec=spec, name=name, storage=where, solved=solved,
                        records=records, trials=sorted(mine), seconds=time.perf_counter() - t_start,
                        first_hit=first_hit or None, interrupted=interrupted, notes=notes)


# ---- pieces ------------------------------------------------------------------------------------

def _space(space: SearchSpace | str | Path | None) -> SearchSpace:
    if space is None:
        return default_space()
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, (str, Path)):
        return load_space(space)
    raise InputError(f"space: give a SearchSpace or a TOML file path, not {type(space).__name__}")


def _objectives(objective: Any, proxy: bool) -> tuple[tuple[str, ...], dict[str, Callable[..., float]]]:
    """Objective names (built-ins and callables' names) and the callables by name."""
    if objective is None or isinstance(objective, str):
        return parse_objectives(objective, proxy), {}
    items = list(objective) if isinstance(objective, (list, tuple)) else [objective]
    if not items:
        raise InputError("objective: give at least one objective")
    names: list[str] = []
    fns: dict[str, Callable[..., float]] = {}
    for item in items:
        if isinstance(item, str):
            for n in parse_objectives(item, proxy):
                if n not in names:
                    names.append(n)
        elif callable(item):
            base = getattr(item, "__name__", "objective").strip("<>") or "objective"
            n, i = base, 2
            while n in names or n in R.OBJECTIVES:
                n, i = f"{base}_{i}", i + 1
            names.append(n)
            fns[n] = item
        else:
            raise InputError(f"objective {item!r}: give a built-in name or a callable f(config) -> float")
    if proxy and "proxy_ap" not in names:
        names.append("proxy_ap")
    return tuple(names), fns


def _reference(reference: Any, space: SearchSpace, tell: Callable[[str], None]) -> FeatherFaceConfig:
    """The reference config of `closest`; a note when the space cannot express some of its knobs."""
    from featherface_tune.models.presets import get_preset, resolve_config

    if isinstance(reference, FeatherFaceConfig):
        cfg, label = reference, "the reference config"
    elif isinstance(reference, Mapping):
        cfg, label = from_mapping(dict(reference), source="reference"), "the reference config"
    else:
        text = str(reference)
        label = f"reference {text!r}"
        if Path(text).is_file():
            cfg = resolve_config(config_file=text)
        elif "/" in text or text.lower().endswith((".toml", ".json")):
            raise InputError(f"--reference {text!r}: config file does not exist (and it is not a preset name)")
        else:
            try:
                cfg = get_preset(text)
            except ConfigError as exc:
                raise InputError(f"--reference: {exc}") from None
    knobs = knobs_from_config(cfg)
    outside = [f"{k}={knobs[k]!r}" for k in KNOBS if applies(k, knobs) and knobs[k] not in space.domain(k).values]
    if outside:
        tell(f"{label}: the space cannot express {', '.join(outside)}; closest measures the distance to it anyway")
    return cfg


def _check_max_macs(proof: Proof, max_macs: int | None) -> None:
    if max_macs is None or proof.exact is None or len(proof.exact):
        return
    c = proof.certificate
    raise NoConfigInWindow(f"no config with {R.window_text(c.target, c.tolerance)} params has MACs <= {max_macs:,}; "
                           f"the fewest in the window: {proof.least_macs:,} (proof: {c.evidence()})")


def _optima(proof: Proof, names: Sequence[str], ref: FeatherFaceConfig | None, top: int) -> list[int]:
    """Indices of the top exact configs under the analytic objectives (ranking rule of `ranking`)."""
    import numpy as np

    from featherface_tune.tuner.ranking import rank_order
    from featherface_tune.tuner.solve import SWITCH_COST

    ex = proof.exact
    assert ex is not None
    cols = []
    for n in names:
        if n == "macs":
            cols.append(ex.macs.astype("float64"))
        else:
            assert ref is not None
            sw, wd = ex.distances(knobs_from_config(ref))
            cols.append(sw * SWITCH_COST + wd)
    values = np.stack(cols, axis=1)
    # ties go to fewer MACs: the enqueue order (hence the trial numbers the study ranks by) follows MACs
    by_macs = np.argsort(np.argsort(ex.macs, kind="stable"), kind="stable")
    order, _ = rank_order(values, (ex.params - proof.certificate.target).tolist(), by_macs.tolist())
    return order[:top]


def _enqueue(st: Any, knob_sets: Sequence[Mapping[str, Any]], space: SearchSpace, why: str) -> int:
    """Enqueue the exact configs the study neither holds complete nor has waiting; returns how many
    trials are waiting afterwards (an interrupted run leaves some for the rerun)."""
    from featherface_tune.tuner.ranking import config_key
    from featherface_tune.tuner.space import config_from_knobs

    have, waiting = set(), 0
    for t in st.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE" and R.CONFIG in t.user_attrs:
            have.add(config_key(t.user_attrs[R.CONFIG]))
        elif t.state.name == "WAITING":
            waiting += 1
            if R.ENQUEUED in t.user_attrs:
                have.add(config_key(config_from_knobs(t.user_attrs[R.ENQUEUED]["knobs"]).to_dict()))
    for knobs in knob_sets:
        if config_key(config_from_knobs(knobs).to_dict()) in have:
            continue
        params = {k: knobs[k] for k in space.sampled if applies(k, knobs)}
        st.enqueue_trial(params, user_attrs={R.ENQUEUED: {"why": why, "knobs": dict(knobs)}})
        waiting += 1
    return waiting


def _row(r: R.TrialRecord, names: Sequence[str]) -> Row:
    vals = tuple(math.inf if (v := r.objective_value(n)) is None else v for n in names)
    return Row(r.number, from_mapping(dict(r.config or {})), int(r.params or 0), int(r.macs or 0),
               int(r.delta or 0), vals[0] if len(vals) == 1 else vals, r)


def _summary(spec: R.StudySpec) -> str:
    from featherface_tune.tuner.objectives import summarize

    return summarize(spec)
