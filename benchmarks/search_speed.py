"""The budget search on the default space, `--target 489000`:

1. time to the proven optimum of `--objective macs` and `--objective closest` (the real command in a
   fresh process and folder: proof, enumeration of every exact config, SQLite study, recording the
   optima as trials);
2. the repair's cost per trial: a random sample -> the nearest exact config (exact set listed), and the
   fallback visiting structures when the window is too wide to list (`--tolerance 0.1%`);
3. the P3 SSH widths of the feasible trials under a MAC-blind objective (a constant), the repair
   (every knob sampled) against the previous solver (structure sampled, budget knobs and BiFPN depth
   completed with the fewest dense MACs), same sampler, seeds and trial budget.

    python benchmarks/search_speed.py [--repeats 3] [--trials 100]

Medians over the repeats are printed last.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping

import numpy as np
import optuna

from featherface_tune.tuner.solve import Repairer, base_cost, budget_tables, prove
from featherface_tune.tuner.space import BUDGET_KNOBS, KNOBS, SSH_KNOBS, default_space
from featherface_tune.tuner.study import make_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)
TARGET = 489_000


def run_command(objective: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "featherface_tune.cli", "search", "--target", str(TARGET),
                               "--objective", objective, "--json"], cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"search failed: {proc.stderr.strip().splitlines()[-1]}")
    data = json.loads(proc.stdout)
    return {"proof_s": data["certificate"]["seconds"], "command_s": data["worker"]["seconds"], "wall_s": wall,
            "exact": data["solved"]["exact_configs"], "best": data["best"][0]}


def repair_ms(tolerance: int, n: int, seed: int) -> float:
    sp = default_space()
    proof = prove(sp, TARGET, tolerance)
    rep = Repairer(sp, TARGET, tolerance, exact=proof.exact, structures=proof.hit_structures)
    rng = random.Random(seed)
    times = []
    for _ in range(n):
        point = {k: rng.choice(sp.domain(k).values) for k in KNOBS}
        t0 = time.perf_counter()
        sol = rep.repair(point)
        times.append((time.perf_counter() - t0) * 1000)
        assert sol is not None and abs(sol.params - TARGET) <= tolerance
    return statistics.median(times)


def p3_new(trials: int, seed: int) -> list[int]:
    from featherface_tune import search

    res = search(TARGET, objective=lambda cfg: 0.0, trials=trials, seed=seed)
    return [int(r.config["ssh_channels"][0] if isinstance(r.config["ssh_channels"], list) else r.config["ssh_channels"])
            for r in res.records if r.feasible and r.state == "COMPLETE"]


def _param_grid(tables: Any, base_params: int) -> np.ndarray:
    """The previous solver's grid: params of every combination of the tables' values (one axis each)."""
    P = np.full([len(t.values) for t in tables], base_params, dtype=np.int64)
    for i, t in enumerate(tables):
        P = P + t.params.reshape([-1 if j == i else 1 for j in range(len(tables))])
    return P


def _old_completion(sp: Any, sampled: Mapping[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """The previous solver: every completion of the sampled structure (BiFPN depth tried value by
    value), keep the exact ones, take the fewest MACs (dense convention, as it counted); also the
    nearest |params - target| (its constraint when none is exact)."""
    best = None
    near = 10**12
    for extra in sp.iter_structures(fixed=sampled):
        s = {**sampled, **extra}
        tables = budget_tables(sp, s, 640, 640, dcn_macs="dense")
        base = base_cost(s, tables, 640, 640)
        if base is None:
            continue
        P = _param_grid(tables, base[0])
        near = min(near, int(np.abs(P - TARGET).min()))
        M = np.full(P.shape, base[1], dtype=np.int64)
        for i, t in enumerate(tables):
            M = M + t.macs.reshape([-1 if j == i else 1 for j in range(len(tables))])
        idx = np.flatnonzero(P.ravel() == TARGET)
        if not idx.size:
            continue
        pick = idx[np.argmin(M.ravel()[idx])]
        if best is None or M.ravel()[pick] < best[0]:
            ix = np.unravel_index(pick, P.shape)
            best = (int(M.ravel()[pick]), {**s, **{t.knob: t.values[int(i)] for t, i in zip(tables, ix)}})
    return (None if best is None else best[1]), near


def p3_old(trials: int, seed: int) -> list[int]:
    sp = default_space().with_solve(BUDGET_KNOBS + ("bifpn_repeats",))
    out: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        knobs, near = _old_completion(sp, sp.sample(trial))
        trial.set_constraint("params", float(near))  # as the previous search did: feasibility steers TPE
        if knobs is not None:
            out.append(int(knobs[SSH_KNOBS[0]]))
        return 0.0

    study = optuna.create_study(sampler=make_sampler(seed))  # the search's own sampler
    study.optimize(objective, n_trials=trials)
    return out


def _spread(p3: list[int]) -> str:
    if not p3:
        return "no feasible trial"
    q = np.percentile(p3, [25, 50, 75])
    return (f"{len(p3)} feasible, P3 {min(p3)}..{max(p3)} (quartiles {q[0]:g}/{q[1]:g}/{q[2]:g}), "
            f"{len(set(p3))} distinct widths")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100)
    args = ap.parse_args()
    rows: dict[str, list[Any]] = {k: [] for k in ("macs", "closest", "rep_exact", "rep_struct", "new", "old")}
    for seed in range(args.repeats):
        for obj in ("macs", "closest"):
            r = run_command(obj)
            rows[obj].append(r)
            b = r["best"]
            print(f"seed {seed}: --objective {obj}: optimum over {r['exact']:,} exact configs, proof {r['proof_s']:.2f} s, "
                  f"command {r['command_s']:.2f} s, process wall {r['wall_s']:.1f} s; best {b['macs'] / 1e6:,.1f}M MACs "
                  f"{json.dumps({k: b['config'][k] for k in ('neck', 'bifpn_repeats', 'neck_channels', 'ssh_channels', 'ssh_deformable', 'shuffle')})}",
                  flush=True)
        rows["rep_exact"].append(repair_ms(0, 300, seed))
        rows["rep_struct"].append(repair_ms(489, 100, seed))
        print(f"seed {seed}: repair per trial: {rows['rep_exact'][-1]:.2f} ms (exact set), "
              f"{rows['rep_struct'][-1]:.1f} ms (by structure, --tolerance 0.1%)", flush=True)
        new, old = p3_new(args.trials, seed), p3_old(args.trials, seed)
        rows["new"].append(new)
        rows["old"].append(old)
        print(f"seed {seed}: MAC-blind, {args.trials} trials: repair: {_spread(new)} | previous solver: {_spread(old)}",
              flush=True)

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in rows[key])

    print(f"\nmedians over {args.repeats} repeats, target {TARGET:,}, default space:")
    for obj in ("macs", "closest"):
        print(f"  --objective {obj}: proven optimum in {med(obj, 'command_s'):.2f} s (proof {med(obj, 'proof_s'):.2f} s; "
              f"process wall {med(obj, 'wall_s'):.1f} s)")
    print(f"  repair per trial: {statistics.median(rows['rep_exact']):.2f} ms over the exact set, "
          f"{statistics.median(rows['rep_struct']):.1f} ms by structure")
    for key, label in (("new", "repair (every knob sampled)"), ("old", "previous fewest-MACs solver")):
        lo = statistics.median(min(p) for p in rows[key] if p)
        hi = statistics.median(max(p) for p in rows[key] if p)
        distinct = statistics.median(len(set(p)) for p in rows[key])
        mid = statistics.median(float(np.median(p)) for p in rows[key] if p)
        feas = statistics.median(len(p) for p in rows[key])
        print(f"  MAC-blind P3 spread, {label}: P3 {lo:g}..{hi:g}, median {mid:g}, {distinct:g} distinct widths, "
              f"{feas:g} of {args.trials} trials feasible")


if __name__ == "__main__":
    main()
