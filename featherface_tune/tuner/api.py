"""The budget search as a Python API: `featherface_tune.search(target, ...)`.

    from featherface_tune import search

    res = search(489_000)                                   # closest to FeatherFace, proven optimum
    res.best[0].config, res.best[0].macs                    # a FeatherFaceConfig and its MACs
    res = search(489_000, objective=lambda cfg: -min(cfg.ssh_widths), trials=60)  # maximise: negate

Analytic objectives (`macs`, `closest`; `tuner.registry`) are solved over every exact config of the
space (the proof lists them; a window too large to list is streamed structure by structure) and the
top ones (the whole front, with several) are enqueued as the study's trials, whatever `trials` is.
`latency` is solved the same way under the per-block latency model, then its finalists are timed side
by side. Other objectives (`proxy_ap`, callables, sampled latency, and Pareto fronts that include one)
are sampled: Optuna samples every knob, the solver repairs each sample to the nearest exact config
(`solve.Repairer`), and the certificate's witness (then, in a window, the proven analytic optima) are
the first trials. `featherface-tune search` is a thin layer over `search`.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.config import FeatherFaceConfig, from_mapping
from featherface_tune.tuner import records as R
from featherface_tune.tuner import registry
from featherface_tune.tuner.objectives import BudgetObjective, ProxyFn, parse_objectives
from featherface_tune.counter.analytic import check_dcn_macs
from featherface_tune.training.spec import check_pruner
from featherface_tune.models.config import DEFAULT_INPUT
from featherface_tune.counter.conventions import get_convention
from featherface_tune.tuner.solve import (
    MAX_EXACT, Certificate, ExactSet, NoConfigInWindow, Proof, Repairer, check_reachable, check_values,
    prove,
)
from featherface_tune.tuner.space import KNOBS, SearchSpace, applies, default_space, knobs_from_config, load_space

if TYPE_CHECKING:  # beside torch: imported only when a proxy trains, so an analytic search needs no torch
    from featherface_tune.training.spec import Fidelity

_log = logging.getLogger(__name__)  # failed trials' tracebacks, at DEBUG

DEFAULT_TRIALS = R.DEFAULT_TRIALS
DEFAULT_FINALISTS = 5  # best latency predictions timed whole (plus the macs optimum and the closest answer)
LATENCY_MODES = ("model", "sampled")
# configs of a window a sampled search streams for its proven first trials (about 15 s per 4 million)
MAX_WARM_START = 5_000_000
MAX_STREAM = 25_000_000  # configs an analytic objective is solved over structure by structure (about 2 min)
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
           storage: str | None = None, tolerance: int | str = 0, max_macs: int | None = None,
           input_size: tuple[int, int] = DEFAULT_INPUT, dcn_macs: str = "full", convention: str = "numel",
           reference: str | Path | FeatherFaceConfig = DEFAULT_REFERENCE, study: str | None = None,
           seed: int | None = None, timeout: float | None = None, top: int = 10,
           proxy: ProxyFn | None = None, proxy_data: Path | None = None, fidelity: Fidelity | None = None,
           callbacks: Sequence[Callable[[Any, Any], None]] = (), note: Callable[[str], None] | None = None,
           on_start: Callable[[int, int], None] | None = None, pruner: str = "median",
           latency_runtime: str | None = None,
           latency_threads: int = 1, latency_mode: str = "model", finalists: int = DEFAULT_FINALISTS,
           latency_model: Any = None,
           latency_progress: Callable[[str, int, int], None] | None = None, quiet: bool = True) -> SearchResult:
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
    installed) or "torch" (`featherface_tune.deploy.latency`). `latency_mode`: "model" (default)
    predicts latency with the per-block latency model (`deploy.latency_table`, built on first use in
    the user's cache; `latency_model` gives one), solves it over the exact set, then times the
    `finalists` best predictions plus the `macs` optimum and the `closest` answer side by side
    (`deploy.latency.compare`) and ranks them by measured median; "sampled" measures every sampled
    trial (for windows too large to list). `latency_progress(what, done, total)` follows a table
    build. Raises NoConfigInWindow (with `.certificate`)
    when the space provably holds no config in the window. `quiet`: Optuna logs at WARNING during the
    call (no INFO line per trial) and a failed trial's traceback goes to this module's logger at DEBUG
    (its one-line reason is on the trial); False leaves Optuna's logging as it is. When every trial of
    the call fails, `notes` says so and `best` holds only what the study had before.
    """
    from featherface_tune.tuner import study as S

    t_start = time.perf_counter()
    say = note or (lambda text: None)
    notes: list[str] = []

    def tell(text: str) -> None:
        notes.append(text)
        say(text)

    # errors name the argument (field), the value and the rule; the command layer names its flag
    tolerance, (h, w) = check_arguments(target=target, tolerance=tolerance, max_macs=max_macs, trials=trials,
                                        timeout=timeout, top=top, seed=seed, storage=storage, study=study,
                                        input_size=input_size, proxy_data=proxy_data)
    check_dcn_macs(dcn_macs)
    check_pruner(pruner)
    try:
        get_convention(convention, dcn_macs)
    except ConfigError as exc:
        raise InputError(field="convention", rule=str(exc)) from None
    sp = _space(space)
    if proxy is None and proxy_data is not None:  # proxy training on the data given (it was ignored)
        from featherface_tune.tuner.objectives import load_proxy

        proxy = load_proxy(Path(proxy_data))
    names, callables = _objectives(objective, proxy is not None)
    if "latency" in names:
        from featherface_tune.deploy.latency import check_runtime
        from featherface_tune.extras import require

        require("torch", "the latency objective")  # every trial builds its model
        latency_runtime = check_runtime(latency_runtime)
        if latency_threads < 1:
            raise InputError(field="latency_threads", value=latency_threads, rule="must be at least 1")
        if latency_mode not in LATENCY_MODES:
            raise InputError(field="latency_mode", value=latency_mode, rule=f"use {' or '.join(LATENCY_MODES)}")
        if finalists < 1:
            raise InputError(field="finalists", value=finalists, rule="must be at least 1")
        tell(f"latency: {latency_runtime}, {latency_threads} thread(s), batch 1 at {h}x{w}, "
             + ("median to +/-3 % (95 %)" if latency_mode == "sampled" else "per-block latency model, finalists timed"))
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
        tell(f"space: {cert.configs:,} valid configs, {cert.in_window:,} with {window} params "
             f"(counted exhaustively over {cert.structures:,} structures in {cert.seconds:.1f} s)")
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
        from featherface_tune.training.proxy import Fidelity, make_pruner

        fidelity = fidelity or Fidelity()
        trial_pruner = make_pruner(pruner, fidelity.epochs)
    with _optuna_quiet(quiet):  # "A new study created" is an INFO line too
        st = S.open_study(store, name, spec, S.make_sampler(seed), trial_pruner)
    if R.is_legacy(st.user_attrs.get(R.STUDY_ATTR, {})):
        tell(f"study {name!r} is a legacy study (stored before full compute): its MACs are dense")
    repairer = Repairer(sp, target, tolerance, (h, w), dcn_macs, max_macs, proof.exact, proof.hit_structures,
                        convention)
    model = None
    if "latency" in names and latency_mode == "model":
        if proof.exact is None:
            tell("latency: the window holds too many configs to list; measuring sampled trials instead")
        else:
            model = latency_model if latency_model is not None else _latency_model(
                proof, latency_runtime or "torch", latency_threads, (h, w), tell, latency_progress)
    fn = BudgetObjective(sp, spec, proxy, proxy_data, fidelity, latency_threads=latency_threads,
                         latency_runtime=latency_runtime, repairer=repairer, callables=callables,
                         latency_model=model)

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

    objs = [registry.get(n) for n in names]
    analytic = all(o is not None and (o.kind == "analytic" or (o.kind == "model" and model is not None))
                   for o in objs)
    solved: dict[str, Any] | None = None
    interrupted = False
    if analytic and proof.exact is not None:
        t0 = time.perf_counter()
        ctx = registry.Context((h, w), dcn_macs, convention,
                               knobs_from_config(ref_cfg) if ref_cfg is not None else None, model)
        picks, front = _optima(proof.exact, target, names, ctx, top)
        solved = {"exact_configs": len(proof.exact), "optimal": True, "seconds": round(time.perf_counter() - t0, 3)}
        if len(names) > 1:
            solved["front"] = front
        extras: list[dict[str, Any]] = [{} for _ in picks]
        if names == ("latency",) and model is not None:
            picks, extras, solved["finalists"] = _finalists(proof, picks, ctx, sp, reference, finalists, latency_runtime or "torch",
                                              latency_threads, (h, w), tell)
        with S.exclusive(st):  # workers starting together enqueue each optimum once
            todo = _enqueue(st, [proof.exact.knobs(i) for i in picks], sp, "optimum", extras)
        under = " under the latency model" if model is not None else ""
        tell(f"{' and '.join(names)}: optimal{under} over all {len(proof.exact):,} exact configs "
             f"(solved in {solved['seconds']:.2f} s); "
             + _storing(todo, trials))
        runs = todo
    elif analytic and cert.complete and cert.in_window <= MAX_STREAM:  # too many to list: streamed, still proven
        tell(f"{' and '.join(names)}: the window holds {cert.in_window:,} configs, more than the {MAX_EXACT:,} "
             f"listed explicitly: solving structure by structure (about {cert.in_window / 4e6 * 15:,.0f} s)")
        t0 = time.perf_counter()
        ctx = registry.Context((h, w), dcn_macs, convention,
                               knobs_from_config(ref_cfg) if ref_cfg is not None else None)
        kept, picks, front, seen = _optima_by_structure(repairer, names, ctx, top)
        solved = {"exact_configs": seen, "optimal": True, "seconds": round(time.perf_counter() - t0, 3),
                  "method": "by structure"}
        if len(names) > 1:
            solved["front"] = front
        with S.exclusive(st):  # workers starting together enqueue each optimum once
            todo = _enqueue(st, [kept.knobs(i) for i in picks], sp, "optimum")
        tell(f"{' and '.join(names)}: optimal over all {seen:,} configs in the window (solved structure by "
             f"structure in {solved['seconds']:.1f} s); "
             + _storing(todo, trials))
        runs = todo
    else:
        if analytic and cert.complete:
            tell(f"the window holds {cert.in_window:,} configs, more than the {MAX_STREAM:,} solved structure by "
                 "structure in reasonable time: sampling instead (no proof of optimality); narrow the window")
        elif analytic:
            tell("the space is too large to prove: sampling instead (no proof of optimality)")
        if hit is None:  # a provably feasible start: the witness, then the proven analytic optima
            first = ([knobs_from_config(FeatherFaceConfig(**cert.example.config))]
                     if cert.example is not None else [])
            first += _analytic_optima(proof, repairer, ref_cfg, (h, w), dcn_macs, convention) if tolerance else []
            _enqueue(st, first, sp, "witness")
        runs = None
    total = trials if runs is None else before + runs
    if runs is None:
        tell(f"study {name!r} on {where}: {_summary(spec)}; {before} of {total} trials done")
    else:  # solved: the study only stores the optima
        tell(f"study {name!r} on {where}")
    if on_start is not None:
        on_start(before, total)
    try:
        with _optuna_quiet(quiet):
            if runs is None:
                S.run(st, fn, trials, timeout, [on_trial, *callbacks])
            elif runs:
                S.run_queued(st, fn, runs, [on_trial, *callbacks])
    except KeyboardInterrupt:
        interrupted = True

    records = S.trial_records(st)
    ranks = S.rank_feasible(records, names)
    rows = [_row(r, names) for _, r in ranks]
    failed = [r for r in records if r.number in mine and r.state == "FAIL"]
    if mine and len(failed) == len(mine):
        reason = next((r.fail_reason for r in reversed(failed) if r.fail_reason), "no reason recorded")
        tell(f"every trial of this call failed ({len(failed)}), e.g. {reason}"
             + ("" if rows else "; no config found"))
    return SearchResult(best=rows, pareto=[_row(r, names) for k, r in ranks if k == 0] if len(names) > 1 else [],
                        certificate=cert, study=st, spec=spec, name=name, storage=where, solved=solved,
                        records=records, trials=sorted(mine), seconds=time.perf_counter() - t_start,
                        first_hit=first_hit or None, interrupted=interrupted, notes=notes)


# ---- pieces ------------------------------------------------------------------------------------

def _storing(todo: int, trials: int) -> str:
    """The end of a solved search's line: how many optima this call stores (and that `trials` is
    ignored, since nothing is sampled)."""
    return ((f"storing the best {todo}" if todo else "the best are already stored")
            + (" (trials ignored: nothing to sample)" if trials != DEFAULT_TRIALS else ""))


def check_arguments(*, target: Any, tolerance: Any, max_macs: Any, trials: Any, timeout: Any, top: Any, seed: Any,
                    storage: Any, study: Any, input_size: Any, proxy_data: Any) -> tuple[int, tuple[int, int]]:
    """The checks the CLI makes of its options, made of `search`'s arguments: InputError naming the
    parameter (`trials "5"`, not a TypeError deep inside). Returns the tolerance in parameters (a
    percent string such as "0.1%" is read as the CLI reads it) and the input size."""
    import math

    from featherface_tune.bounds import MAX_TOP, MAX_TRIALS, check_count, check_input_side, check_int, check_seed
    from featherface_tune.tolerance import search_window

    if isinstance(target, bool) or not isinstance(target, int):
        raise InputError(f"target {target!r}: must be a positive parameter count (an int)")
    check_count(target, "target")
    tolerance = search_window(tolerance, target, "tolerance")  # a count, or a percent string such as "0.1%"
    if max_macs is not None:
        check_int(max_macs, "max_macs", 1, 10**18)
    check_int(trials, "trials", 1, MAX_TRIALS)
    check_int(top, "top", 1, MAX_TOP, "each of the top optima of a solved search is evaluated as a trial")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not (math.isfinite(timeout) and timeout > 0)):
        raise InputError(f"timeout {timeout!r}: must be a positive, finite number of seconds")
    if seed is not None:
        check_int(seed, "seed", 0, 2**32 - 1)
        check_seed(seed, "seed")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise InputError(f"storage {storage!r}: give an Optuna storage URL (a non-empty string), or None for memory")
    if study is not None and (not isinstance(study, str) or not study.strip() or len(study) > 512):
        raise InputError(f"study {study!r}: give a name of 1 to 512 characters, or None for the default")
    if not isinstance(input_size, (tuple, list)) or len(input_size) != 2:
        raise InputError(f"input_size {input_size!r}: give (height, width), two integers")
    hw = check_input_side(input_size[0], input_size[1], "input_size")
    if proxy_data is not None and not Path(proxy_data).is_dir():
        raise InputError(f"proxy_data {str(proxy_data)!r}: not a folder (a WIDERFace-layout dataset)")
    return tolerance, hw


class _TrialFailuresAtDebug(logging.Filter):
    """Drops Optuna's warning per failed trial (a traceback each) and logs it at DEBUG instead; any
    other record passes only at or above `threshold` (Optuna's verbosity for the block)."""

    def __init__(self, threshold: int):
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("Trial ") and " failed" in text:
            _log.debug(text, exc_info=record.exc_info)
            return False
        return record.levelno >= self.threshold


@contextmanager
def _optuna_quiet(quiet: bool) -> Iterator[None]:
    """Optuna at WARNING and failed trials at DEBUG for the block (see `search`'s `quiet`)."""
    if not quiet:
        yield
        return
    import optuna

    level = optuna.logging.get_verbosity()
    failures = logging.getLogger("optuna.study._optimize")  # where Optuna reports a failed trial
    at_debug = _TrialFailuresAtDebug(max(level, optuna.logging.WARNING))
    failures_level = failures.level
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    # the failure warnings are made even where Optuna is quieter than WARNING (e.g. after the CLI set
    # ERROR in this process), so their tracebacks still reach DEBUG; the filter drops them from Optuna
    failures.setLevel(logging.WARNING)
    failures.addFilter(at_debug)
    try:
        yield
    finally:
        failures.removeFilter(at_debug)
        failures.setLevel(failures_level)
        optuna.logging.set_verbosity(level)


def _space(space: SearchSpace | str | Path | None) -> SearchSpace:
    from featherface_tune.bounds import check_space_size
    from featherface_tune.tuner.space import SSH_KNOBS, STRUCTURE_KNOBS

    if space is None:
        sp = default_space()
    elif isinstance(space, SearchSpace):
        sp = space
    elif isinstance(space, (str, Path)):
        sp = load_space(space)
    else:
        raise InputError(f"space: give a SearchSpace or a TOML file path, not {type(space).__name__}")
    check_space_size({k: len(sp.domain(k).values) for k in KNOBS}, STRUCTURE_KNOBS, SSH_KNOBS)
    return sp


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
            while n in names or registry.get(n) is not None:
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


def _optima(ex: ExactSet, target: int, names: Sequence[str], ctx: registry.Context, top: int
            ) -> tuple[list[int], int]:
    """(indices of the configs of `ex` to record, size of the Pareto front): the whole front and the
    `top` best by the ranking rule of `ranking`, over the registered objectives' values rounded as
    each says (`registry`: equal values tie, and ties go to fewer MACs)."""
    import numpy as np

    from featherface_tune.tuner.ranking import rank_order

    cols = []
    for n in names:
        obj = registry.get(n)
        assert obj is not None
        v = np.asarray(obj.exact_values(ex, ctx), dtype="float64")
        v = v if obj.decimals is None else np.round(v, obj.decimals)
        cols.append(v if obj.direction == "minimize" else -v)
    values = np.stack(cols, axis=1)
    # ties go to fewer MACs: the enqueue order (hence the trial numbers the study ranks by) follows MACs
    by_macs = np.argsort(np.argsort(ex.macs, kind="stable"), kind="stable")
    order, front = rank_order(values, (ex.params - target).tolist(), by_macs.tolist())
    n_front = int(front.sum()) if len(names) > 1 else 0
    return order[:max(top, n_front)], n_front


def _optima_by_structure(repairer: Repairer, names: Sequence[str], ctx: registry.Context, top: int
                         ) -> tuple[ExactSet, list[int], int, int]:
    """`_optima` over a window too large to list: its configs stream in chunks, structure by
    structure (`Repairer.window`), and only the front and the `top` best so far are kept (the front
    of a union is the front of the parts' fronts). (kept configs, their order, front size, configs
    compared)."""
    import numpy as np

    kept: ExactSet | None = None
    picks: list[int] = []
    front = seen = 0
    for chunk in repairer.window():
        seen += len(chunk)
        pool = chunk if kept is None else kept.concat(chunk)
        order, front = _optima(pool, repairer.target, names, ctx, top)
        kept = pool.subset(np.asarray(order, dtype=np.int64)).compact()
        picks = list(range(len(order)))
    if kept is None:
        raise NoConfigInWindow(f"no config with {R.window_text(repairer.target, repairer.tolerance)} params")
    return kept, picks, front, seen


def _analytic_optima(proof: Proof, repairer: Repairer, ref: FeatherFaceConfig | None, size: tuple[int, int],
                     dcn_macs: str, convention: str) -> list[dict[str, Any]]:
    """The proven `macs` optimum and (with a reference) `closest` optimum of the window, as knobs:
    the first trials of a sampled search in a window (empty when the space was too large to prove)."""
    cert = proof.certificate
    if not cert.complete or not cert.in_window or (proof.exact is None and cert.in_window > MAX_WARM_START):
        return []  # too many to stream before the first trial: the witness alone starts the search
    out = []
    for name in ("macs", "closest") if ref is not None else ("macs",):
        ctx = registry.Context(size, dcn_macs, convention, knobs_from_config(ref) if ref is not None else None)
        if proof.exact is not None:
            (i,), _ = _optima(proof.exact, proof.certificate.target, (name,), ctx, 1)
            out.append(proof.exact.knobs(i))
        else:
            kept, picks, _, _ = _optima_by_structure(repairer, (name,), ctx, 1)
            out.append(kept.knobs(picks[0]))
    return out


def _latency_model(proof: Proof, runtime: str, threads: int, size: tuple[int, int], tell: Callable[[str], None],
                   progress: Callable[[str, int, int], None] | None) -> Any:
    """The latency model covering every exact config (the cached table, extended and validated on
    first use)."""
    from featherface_tune.deploy.latency_table import LatencyModel, get_table

    ex = proof.exact
    assert ex is not None
    cfgs = [ex.config(i) for i in range(len(ex))]
    return LatencyModel(get_table(cfgs, runtime, threads, size, note=tell, progress=progress))


def _finalists(proof: Proof, picks: list[int], ctx: registry.Context, space: SearchSpace, reference: Any,
               k: int, runtime: str, threads: int, size: tuple[int, int], tell: Callable[[str], None]
               ) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]]]:
    """Time the `k` best predictions, the macs optimum and the closest answer side by side
    (`deploy.latency.compare`); (their indices fastest first, the enqueue extras with each timing,
    a summary per finalist)."""
    import numpy as np

    from featherface_tune.deploy.latency import compare, indistinguishable

    ex = proof.exact
    assert ex is not None
    why: dict[int, list[str]] = {}
    for i in picks[:k]:
        why.setdefault(int(i), []).append("predicted fastest")
    macs_ctx = registry.Context(ctx.input_size, ctx.dcn_macs, ctx.convention)
    target = proof.certificate.target
    (i_macs,), _ = _optima(ex, target, ("macs",), macs_ctx, 1)
    why.setdefault(int(i_macs), []).append("macs optimum")
    ref = _reference(reference, space, tell)
    close_ctx = registry.Context(ctx.input_size, ctx.dcn_macs, ctx.convention, knobs_from_config(ref))
    (i_close,), _ = _optima(ex, target, ("closest",), close_ctx, 1)
    why.setdefault(int(i_close), []).append("closest answer")
    idx = list(why)
    cfgs = [ex.config(i) for i in idx]
    tell(f"latency: timing {len(idx)} finalists side by side (interleaved rounds, one process)")
    from featherface_tune.tuner.objectives import latency_time_cap

    lats = compare(cfgs, size[0], size[1], runtime, threads, max_seconds=2 * latency_time_cap())
    same = indistinguishable(lats)
    predicted = np.asarray(ctx.latency_model.predict_exact(ex.subset(np.isin(np.arange(len(ex)), idx))))
    pred_by = dict(zip(sorted(idx), predicted.tolist()))
    order = sorted(range(len(idx)), key=lambda j: (round(lats[j].median_ms, 3), int(ex.macs[idx[j]])))
    summary = []
    for j in order:
        lat = lats[j]
        summary.append({"config": cfgs[j].to_dict(), "why": why[idx[j]], "macs": int(ex.macs[idx[j]]),
                        "latency_predicted_ms": round(pred_by[idx[j]], 4), "latency_ms": round(lat.median_ms, 4),
                        "latency_ci_ms": [round(v, 4) for v in lat.ci_ms], "indistinguishable_from_best": same[j]})
    ties = sum(1 for j in order if same[j]) - 1
    tell(f"latency: fastest measured {lats[order[0]].median_ms:.2f} ms ({', '.join(why[idx[order[0]]])}); "
         + (f"{ties} other finalist(s) cannot be told apart from it (95 % intervals overlap)" if ties
            else "every other finalist is measurably slower"))
    return [idx[j] for j in order], [{"latency": lats[j].to_json()} for j in order], summary


def _enqueue(st: Any, knob_sets: Sequence[Mapping[str, Any]], space: SearchSpace, why: str,
             extras: Sequence[Mapping[str, Any]] | None = None) -> int:
    """Enqueue the exact configs the study neither holds complete nor has waiting; returns how many
    trials are waiting afterwards (an interrupted run leaves some for the rerun)."""
    from optuna.trial import TrialState

    from featherface_tune.tuner import study as S
    from featherface_tune.tuner.ranking import config_key
    from featherface_tune.tuner.space import config_from_knobs

    have, waiting = set(), 0
    for t in st.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE" and R.CONFIG in t.user_attrs:
            have.add(config_key(t.user_attrs[R.CONFIG]))
        elif t.state.name in ("WAITING", "RUNNING"):  # RUNNING: another worker evaluates it now
            if S.abandoned(t):  # its worker was killed (a journal has no heartbeat to tell): redo it
                st._storage.set_trial_user_attr(t._trial_id, R.FAIL_REASON, "its worker died")
                st._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                continue
            waiting += t.state.name == "WAITING"
            if R.ENQUEUED in t.user_attrs:
                have.add(config_key(config_from_knobs(t.user_attrs[R.ENQUEUED]["knobs"]).to_dict()))
    for j, knobs in enumerate(knob_sets):
        if config_key(config_from_knobs(knobs).to_dict()) in have:
            continue
        params = {k: knobs[k] for k in space.sampled if applies(k, knobs)}
        extra = dict(extras[j]) if extras is not None else {}
        st.enqueue_trial(params, user_attrs={R.ENQUEUED: {"why": why, "knobs": dict(knobs), **extra}})
        waiting += 1
    return waiting


def _row(r: R.TrialRecord, names: Sequence[str]) -> Row:
    vals = tuple(math.inf if (v := r.objective_value(n)) is None else v for n in names)
    return Row(r.number, from_mapping(dict(r.config or {})), int(r.params or 0), int(r.macs or 0),
               int(r.delta or 0), vals[0] if len(vals) == 1 else vals, r)


def _summary(spec: R.StudySpec) -> str:
    from featherface_tune.tuner.objectives import summarize

    return summarize(spec)
