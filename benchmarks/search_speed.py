"""Time to the first exact hit for `--target 489000` on the default space: the budget search
(`featherface-tune search`, structure sampled by TPE, budget knobs solved exactly) against plain Optuna
TPE sampling every knob of the same space with the same trial budget and minimising |params - target|.

    python benchmarks/search_speed.py [--repeats 3] [--trials 300] [--target 489000]

The search runs as the real command in a fresh process and a fresh working folder (default SQLite
store), seeds 0..repeats-1; "first hit" is measured inside the command from its start (space proof,
study creation and all trials up to the first feasible one; not the ~2 s of Python/torch start-up,
which `process wall` includes). Plain TPE runs in this process with in-memory storage (no database
cost, which favours it). Medians over the repeats are printed last.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time

import optuna

from featherface_tune.commands.search import DEFAULT_TRIALS
from featherface_tune.counter.analytic import count_params
from featherface_tune.errors import ConfigError
from featherface_tune.tuner.space import config_from_knobs, default_space

optuna.logging.set_verbosity(optuna.logging.ERROR)


def run_search(target: int, trials: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "featherface_tune.cli", "search", "--target", str(target),
                               "--trials", str(trials), "--seed", str(seed), "--json"],
                              cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"search failed: {proc.stderr.strip().splitlines()[-1]}")
    data = json.loads(proc.stdout)
    hit = data["worker"]["first_exact_hit"]
    best = min((abs(r["delta"]) for r in data["best"]), default=None)
    return {"first_hit_s": hit["seconds"] if hit else math.inf, "first_hit_trial": hit["trial"] if hit else None,
            "best_abs_delta": best if best is not None else math.inf, "exact_configs": data["feasible_configs"],
            "feasible_trials": data["feasible_trials"], "command_s": data["worker"]["seconds"], "wall_s": wall}


def run_plain_tpe(target: int, trials: int, seed: int) -> dict:
    space = default_space().with_solve(())  # TPE samples every knob, the budget knobs included
    first: dict = {}
    exact: set[str] = set()
    t0 = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        try:
            cfg = config_from_knobs(space.sample(trial))
        except ConfigError:
            return 1e9  # a rule broken (e.g. CBAM ratio above the width)
        d = abs(count_params(cfg) - target)
        if d == 0:
            exact.add(json.dumps(cfg.to_dict(), sort_keys=True))
            first.setdefault("t", time.perf_counter() - t0)
            first.setdefault("n", trial.number)
        return float(d)

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    study.optimize(objective, n_trials=trials)
    return {"first_hit_s": first.get("t", math.inf), "first_hit_trial": first.get("n"),
            "best_abs_delta": int(study.best_value), "exact_configs": len(exact),
            "wall_s": time.perf_counter() - t0}


def _fmt(v: float) -> str:
    return "never" if math.isinf(v) else f"{v:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    ap.add_argument("--target", type=int, default=489_000)
    args = ap.parse_args()
    ours, plain = [], []
    for seed in range(args.repeats):
        a = run_search(args.target, args.trials, seed)
        b = run_plain_tpe(args.target, args.trials, seed)
        ours.append(a)
        plain.append(b)
        print(f"seed {seed}: search: first exact hit {_fmt(a['first_hit_s'])} (trial {a['first_hit_trial']}), "
              f"{a['exact_configs']} distinct exact configs, command {a['command_s']:.1f} s, process wall "
              f"{a['wall_s']:.1f} s | plain TPE: best |params - target| {b['best_abs_delta']}, first exact hit "
              f"{_fmt(b['first_hit_s'])}, {b['exact_configs']} exact configs, {b['wall_s']:.1f} s", flush=True)

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"\nmedians over {args.repeats} repeats, target {args.target:,}, {args.trials} trials each, default space:")
    print(f"  budget search: first exact hit {_fmt(med(ours, 'first_hit_s'))}; best |delta| "
          f"{med(ours, 'best_abs_delta'):g}; distinct exact configs {med(ours, 'exact_configs'):g}; "
          f"whole run {med(ours, 'command_s'):.1f} s (process wall {med(ours, 'wall_s'):.1f} s)")
    print(f"  plain TPE:     first exact hit {_fmt(med(plain, 'first_hit_s'))}; best |delta| "
          f"{med(plain, 'best_abs_delta'):g}; distinct exact configs {med(plain, 'exact_configs'):g}; "
          f"whole run {med(plain, 'wall_s'):.1f} s")


if __name__ == "__main__":
    main()
