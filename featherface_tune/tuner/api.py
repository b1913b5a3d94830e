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

`search` composes private steps: `_plan` (the checks, then the space, objectives, reference, proof,
spec and latency model) and `_run` (the study opened, the solved, streamed or sampled path, the worker
loop, the result); the study's storages, worker loop and ranking are `storage`, `_loop` and `ranking`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from featherface_tune.counter.conventions import Convention, get_convention
from featherface_tune.models.config import DEFAULT_INPUT, FeatherFaceConfig
from featherface_tune.tuner import _plan
from featherface_tune.tuner import records as R
from featherface_tune.tuner._plan import DEFAULT_FINALISTS, LATENCY_MODES, check_arguments
from featherface_tune.tuner.objectives import ProxyFn
from featherface_tune.tuner.result import Row, SearchResult
from featherface_tune.tuner.space import SearchSpace

from featherface_tune.training.spec import Fidelity  # torch-free: an analytic search needs no torch

DEFAULT_TRIALS = R.DEFAULT_TRIALS
DEFAULT_REFERENCE = R.DEFAULT_REFERENCE
Objective = str | Callable[[FeatherFaceConfig], float]
__all__ = ["search", "check_arguments", "SearchResult", "Row", "Objective", "DEFAULT_TRIALS", "DEFAULT_REFERENCE",
           "DEFAULT_FINALISTS", "LATENCY_MODES"]


def search(target: int, *, space: SearchSpace | str | Path | None = None,
           objective: Objective | Sequence[Objective] | None = None, trials: int = DEFAULT_TRIALS,
           storage: str | None = None, tolerance: int | str = 0, max_macs: int | None = None,
           input_size: tuple[int, int] = DEFAULT_INPUT, dcn_macs: str = "full", convention: str | Convention = "numel",
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
    `featherface_tune.tuner.storage.open_storage`), None to keep everything in memory. `dcn_macs`: "full"
    counts the DCN offset and modulator convs in MACs, "dense" leaves them out. `convention`: how
    params and MACs are counted (a name or a `Convention` of `featherface_tune.counter.conventions`;
    "thop" lands on the figure thop reports for the official code, the paper's convention). `note` receives the
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

    Every argument is checked before any work, by the one function the command uses too
    (`check_arguments`: InputError naming the argument, its value and the rule). The result's
    `to_json(top)` is the document `featherface-tune search --json` prints.
    """
    # the checks first (one function, shared with the command): a usage error imports neither Optuna nor torch
    tolerance, size = check_arguments(
        target=target, tolerance=tolerance, max_macs=max_macs, trials=trials, timeout=timeout, top=top, seed=seed,
        storage=storage, study=study, input_size=input_size, proxy_data=proxy_data,
        needs_proxy_data={"fidelity": fidelity}, objective=objective, proxy=proxy, reference=reference,
        dcn_macs=dcn_macs, convention=convention, pruner=pruner, latency_runtime=latency_runtime,
        latency_threads=latency_threads, latency_mode=latency_mode, finalists=finalists)
    from featherface_tune.tuner._run import Worker, budget_objective

    started, notes = time.perf_counter(), _plan.Notes(note)
    plan = _plan.make_plan(target, tolerance, size, space=space, objective=objective, proxy=proxy,
                           proxy_data=proxy_data, reference=reference, counting=get_convention(convention, dcn_macs),
                           max_macs=max_macs, latency_runtime=latency_runtime, latency_threads=latency_threads,
                           latency_mode=latency_mode, fidelity=fidelity, tell=notes)
    worker = Worker.open(plan, storage, study, seed, pruner, quiet, notes)
    _plan.add_latency_model(plan, latency_mode, latency_model, latency_threads, latency_progress, notes)
    runs = worker.prepare(top, trials, finalists, latency_threads)
    worker.run(runs, budget_objective(plan, proxy_data, latency_threads), trials, timeout, callbacks, on_start,
               quiet, started)
    return worker.result(started, notes)
