"""Running a planned budget search (`_plan.Plan`) on its study: the solved path (analytic objectives
over the listed exact set), the streamed path (a window too large to list, solved structure by
structure), the sampled path (Optuna samples, the solver repairs), then the worker loop with its
interrupt handling, and the result with the failure note."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from featherface_tune.counter.conventions import Convention
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.tuner import records as R
from featherface_tune.tuner import registry
from featherface_tune.tuner import study as S
from featherface_tune.tuner._plan import Plan
from featherface_tune.tuner.objectives import BudgetObjective
from featherface_tune.tuner.result import Row, SearchResult
from featherface_tune.tuner.solve import MAX_EXACT, ExactSet, NoConfigInWindow, Proof, Repairer
from featherface_tune.tuner.space import SearchSpace, applies, knobs_from_config

# failed trials' tracebacks, at DEBUG, on the logger `search` documents (the API's module)
_log = logging.getLogger("featherface_tune.tuner.api")

# configs of a window a sampled search streams for its proven first trials (about 15 s per 4 million)
MAX_WARM_START = 5_000_000
MAX_STREAM = 25_000_000  # configs an analytic objective is solved over structure by structure (about 2 min)


@dataclass
class Worker:
    """This call's worker on the study: what it opened, what it solved, the trials it ran."""

    plan: Plan
    study: Any
    name: str
    where: str  # the storage, as notes and the result show it
    tell: Callable[[str], None]
    before: int = 0  # counted trials the study held when this call began
    mine: list[int] = field(default_factory=list)
    first_hit: dict[str, Any] = field(default_factory=dict)
    solved: dict[str, Any] | None = None
    interrupted: bool = False

    @classmethod
    def open(cls, plan: Plan, storage: str | None, study: str | None, seed: int | None, pruner: str,
             quiet: bool, tell: Callable[[str], None]) -> "Worker":
        """Open the storage (None: in memory) and create or resume the study."""
        import optuna

        if storage is None:
            store, where = optuna.storages.InMemoryStorage(), "memory"
        else:
            store, info = S.open_storage(storage)
            where = f"{info.url} ({info.kind})"
        name = study or S.default_study_name(plan.spec)
        trial_pruner = None
        if plan.proxy is not None and len(plan.names) == 1:
            from featherface_tune.training.proxy import make_pruner
            from featherface_tune.training.spec import Fidelity

            plan.fidelity = plan.fidelity or Fidelity()
            trial_pruner = make_pruner(pruner, plan.fidelity.epochs)
        with optuna_quiet(quiet):  # "A new study created" is an INFO line too
            st = S.open_study(store, name, plan.spec, S.make_sampler(seed), trial_pruner)
        if R.is_legacy(st.user_attrs.get(R.STUDY_ATTR, {})):
            tell(f"study {name!r} is a legacy study (stored before full compute): its MACs are dense")
        worker = cls(plan, st, name, where, tell, before=S.counted_trials(st))
        hit = next((t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
                    and t.user_attrs.get(R.FEASIBLE)), None)
        if hit is not None:
            worker.first_hit = {"trial": hit.number, "seconds": None, "resumed": True}
        return worker

    def prepare(self, top: int, trials: int, finalists: int, latency_threads: int) -> int | None:
        """Record the proven optima of a solved search (how many trials are queued), or enqueue the
        first trials of a sampled one (None)."""
        plan = self.plan
        cert, exact = plan.proof.certificate, plan.proof.exact
        analytic = all(o is not None and (o.kind == "analytic" or (o.kind == "model" and plan.latency_model is not None))
                       for o in (registry.get(n) for n in plan.names))
        if analytic and exact is not None:
            return self._solve_listed(exact, top, trials, finalists, latency_threads)
        if analytic and cert.complete and cert.in_window <= MAX_STREAM:  # too many to list: streamed, still proven
            return self._solve_streamed(top, trials)
        if analytic and cert.complete:
            self.tell(f"the window holds {cert.in_window:,} configs, more than the {MAX_STREAM:,} solved structure by "
                      "structure in reasonable time: sampling instead (no proof of optimality); narrow the window")
        elif analytic:
            self.tell("the space is too large to prove: sampling instead (no proof of optimality)")
        if not self.first_hit.get("resumed"):  # a provably feasible start: the witness, then the proven optima
            first = [knobs_from_config(FeatherFaceConfig(**cert.example.config))] if cert.example is not None else []
            first += analytic_optima(plan.proof, plan.repairer, plan.ref_cfg, plan.size,
                                     plan.counting) if plan.tolerance else []
            enqueue(self.study, first, plan.space, "witness")
        return None

    def _solve_listed(self, exact: ExactSet, top: int, trials: int, finalists: int, latency_threads: int) -> int:
        plan, names = self.plan, self.plan.names
        t0 = time.perf_counter()
        ctx = plan.context()
        picks, front = optima(exact, plan.target, names, ctx, top)
        solved: dict[str, Any] = {"exact_configs": len(exact), "optimal": True,
                                  "seconds": round(time.perf_counter() - t0, 3)}
        if len(names) > 1:
            solved["front"] = front
        extras: list[dict[str, Any]] = [{} for _ in picks]
        if names == ("latency",) and plan.latency_model is not None:
            picks, extras, solved["finalists"] = time_finalists(plan, picks, ctx, finalists, latency_threads, self.tell)
        with S.exclusive(self.study):  # workers starting together enqueue each optimum once
            todo = enqueue(self.study, [exact.knobs(i) for i in picks], plan.space, "optimum", extras)
        under = " under the latency model" if plan.latency_model is not None else ""
        self.tell(f"{' and '.join(names)}: optimal{under} over all {len(exact):,} exact configs "
                  f"(solved in {solved['seconds']:.2f} s); " + storing(todo, trials))
        self.solved = solved
        return todo

    def _solve_streamed(self, top: int, trials: int) -> int:
        plan, names = self.plan, self.plan.names
        self.tell(f"{' and '.join(names)}: the window holds {plan.proof.certificate.in_window:,} configs, more than "
                  f"the {MAX_EXACT:,} listed explicitly: solving structure by structure (about "
                  f"{plan.proof.certificate.in_window / 4e6 * 15:,.0f} s)")
        t0 = time.perf_counter()
        kept, picks, front, seen = optima_by_structure(plan.repairer, names, plan.context(model=False), top)
        solved: dict[str, Any] = {"exact_configs": seen, "optimal": True,
                                  "seconds": round(time.perf_counter() - t0, 3), "method": "by structure"}
        if len(names) > 1:
            solved["front"] = front
        with S.exclusive(self.study):  # workers starting together enqueue each optimum once
            todo = enqueue(self.study, [kept.knobs(i) for i in picks], plan.space, "optimum")
        self.tell(f"{' and '.join(names)}: optimal over all {seen:,} configs in the window (solved structure by "
                  f"structure in {solved['seconds']:.1f} s); " + storing(todo, trials))
        self.solved = solved
        return todo

    def run(self, runs: int | None, fn: BudgetObjective, trials: int, timeout: float | None,
            callbacks: Sequence[Callable[[Any, Any], None]], on_start: Callable[[int, int], None] | None,
            quiet: bool, started: float) -> None:
        """Run the queued optima (`runs`) or sample until the study holds `trials`; Ctrl-C and SIGTERM
        end the call with `interrupted` set (the trial in flight is marked FAIL)."""
        from featherface_tune.tuner.objectives import summarize

        total = trials if runs is None else self.before + runs
        if runs is None:
            self.tell(f"study {self.name!r} on {self.where}: {summarize(self.plan.spec)}; "
                      f"{self.before} of {total} trials done")
        else:  # solved: the study only stores the optima
            self.tell(f"study {self.name!r} on {self.where}")
        if on_start is not None:
            on_start(self.before, total)

        def on_trial(_st: Any, t: Any) -> None:
            self.mine.append(t.number)
            if not self.first_hit and t.state.name == "COMPLETE" and t.user_attrs.get(R.FEASIBLE):
                self.first_hit.update({"trial": t.number, "seconds": round(time.perf_counter() - started, 3),
                                       "resumed": False})

        try:
            with optuna_quiet(quiet):
                if runs is None:
                    S.run(self.study, fn, trials, timeout, [on_trial, *callbacks])
                elif runs:
                    S.run_queued(self.study, fn, runs, [on_trial, *callbacks])
        except KeyboardInterrupt:
            self.interrupted = True

    def result(self, started: float, notes: list[str]) -> SearchResult:
        """The study's ranking after this call; a note when every trial of the call failed."""
        names = self.plan.names
        records = S.trial_records(self.study)
        ranks = S.rank_feasible(records, names)
        rows = [Row.of(r, names) for _, r in ranks]
        failed = [r for r in records if r.number in self.mine and r.state == "FAIL"]
        if self.mine and len(failed) == len(self.mine):
            reason = next((r.fail_reason for r in reversed(failed) if r.fail_reason), "no reason recorded")
            self.tell(f"every trial of this call failed ({len(failed)}), e.g. {reason}"
                      + ("" if rows else "; no config found"))
        pareto = [Row.of(r, names) for k, r in ranks if k == 0] if len(names) > 1 else []
        return SearchResult(best=rows, pareto=pareto, certificate=self.plan.proof.certificate, study=self.study,
                            spec=self.plan.spec, name=self.name, storage=self.where, solved=self.solved,
                            records=records, trials=sorted(self.mine), seconds=time.perf_counter() - started,
                            first_hit=self.first_hit or None, interrupted=self.interrupted, notes=list(notes))


def budget_objective(plan: Plan, proxy_data: Any, latency_threads: int) -> BudgetObjective:
    """The Optuna objective of the plan (sample, repair, count, evaluate)."""
    return BudgetObjective(plan.space, plan.spec, plan.proxy, proxy_data, plan.fidelity,
                           latency_threads=latency_threads, latency_runtime=plan.latency_runtime,
                           repairer=plan.repairer, callables=plan.callables, latency_model=plan.latency_model)


def storing(todo: int, trials: int) -> str:
    """The end of a solved search's line: how many optima this call stores (and that `trials` is
    ignored, since nothing is sampled)."""
    return ((f"storing the best {todo}" if todo else "the best are already stored")
            + (" (trials ignored: nothing to sample)" if trials != R.DEFAULT_TRIALS else ""))


# ---- Optuna's logging during a call ----------------------------------------------------------------

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
def optuna_quiet(quiet: bool) -> Iterator[None]:
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


# ---- solving -----------------------------------------------------------------------------------

def optima(ex: ExactSet, target: int, names: Sequence[str], ctx: registry.Context, top: int
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


def optima_by_structure(repairer: Repairer, names: Sequence[str], ctx: registry.Context, top: int
                        ) -> tuple[ExactSet, list[int], int, int]:
    """`optima` over a window too large to list: its configs stream in chunks, structure by
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
        order, front = optima(pool, repairer.target, names, ctx, top)
        kept = pool.subset(np.asarray(order, dtype=np.int64)).compact()
        picks = list(range(len(order)))
    if kept is None:
        raise NoConfigInWindow(f"no config with {R.window_text(repairer.target, repairer.tolerance)} params")
    return kept, picks, front, seen


def analytic_optima(proof: Proof, repairer: Repairer, ref: FeatherFaceConfig | None, size: tuple[int, int],
                    counting: Convention) -> list[dict[str, Any]]:
    """The proven `macs` optimum and (with a reference) `closest` optimum of the window, as knobs:
    the first trials of a sampled search in a window (empty when the space was too large to prove)."""
    cert = proof.certificate
    if not cert.complete or not cert.in_window or (proof.exact is None and cert.in_window > MAX_WARM_START):
        return []  # too many to stream before the first trial: the witness alone starts the search
    out = []
    for name in ("macs", "closest") if ref is not None else ("macs",):
        ctx = registry.Context(size, counting, knobs_from_config(ref) if ref is not None else None)
        if proof.exact is not None:
            (i,), _ = optima(proof.exact, proof.certificate.target, (name,), ctx, 1)
            out.append(proof.exact.knobs(i))
        else:
            kept, picks, _, _ = optima_by_structure(repairer, (name,), ctx, 1)
            out.append(kept.knobs(picks[0]))
    return out


def time_finalists(plan: Plan, picks: list[int], ctx: registry.Context, k: int, threads: int,
                   tell: Callable[[str], None]) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]]]:
    """Time the `k` best predictions, the macs optimum and the closest answer side by side
    (`deploy.latency.compare`); (their indices fastest first, the enqueue extras with each timing,
    a summary per finalist)."""
    import numpy as np

    from featherface_tune.deploy.latency import compare, indistinguishable

    proof, size, runtime = plan.proof, plan.size, plan.latency_runtime or "torch"
    ex = proof.exact
    assert ex is not None
    why: dict[int, list[str]] = {}
    for i in picks[:k]:
        why.setdefault(int(i), []).append("predicted fastest")
    macs_ctx = registry.Context(ctx.input_size, ctx.counting)
    target = proof.certificate.target
    (i_macs,), _ = optima(ex, target, ("macs",), macs_ctx, 1)
    why.setdefault(int(i_macs), []).append("macs optimum")
    assert plan.reference is not None  # resolved by the plan of a latency search
    close_ctx = registry.Context(ctx.input_size, ctx.counting, knobs_from_config(plan.reference))
    (i_close,), _ = optima(ex, target, ("closest",), close_ctx, 1)
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


def enqueue(st: Any, knob_sets: Sequence[Mapping[str, Any]], space: SearchSpace, why: str,
            extras: Sequence[Mapping[str, Any]] | None = None) -> int:
    """Enqueue the exact configs the study neither holds complete nor has waiting; returns how many
    trials are waiting afterwards (an interrupted run leaves some for the rerun)."""
    from optuna.trial import TrialState

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
