"""Fault figures of solved searches (issue 23), printed, not asserted:

1. N workers started together on one solved study (`--top K` optima enqueued as trials), repeated:
   COMPLETE trials per optimum (must be exactly 1), trials left WAITING or RUNNING, worker exit codes;
2. a journal study given by a RELATIVE path, `kill -9` at random moments K times, then one clean run:
   does it resume to completion, each optimum stored once, how long the resume took (a journal lock
   the kill left is taken over after `JOURNAL_LOCK_GRACE` seconds).

    python benchmarks/solved_workers_stress.py [--workers 3] [--rounds 3] [--kills 20] [--top 30]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def search(storage: str, study: str, top: int, cwd: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    cmd = [sys.executable, "-m", "featherface_tune.cli", "search", "--target", "489000", "--top", str(top),
           "--study", study, "--storage", storage, "--json"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def stored(storage: str, study: str, cwd: Path) -> tuple[dict[str, int], collections.Counter]:  # type: ignore[type-arg]
    import optuna

    from featherface_tune.tuner.study import open_storage

    old = Path.cwd()
    os.chdir(cwd)
    try:
        trials = optuna.load_study(study_name=study, storage=open_storage(storage)[0]).get_trials(deepcopy=False)
    finally:
        os.chdir(old)
    states = dict(collections.Counter(t.state.name for t in trials))
    per_config = collections.Counter(json.dumps(t.user_attrs.get("config"), sort_keys=True)
                                     for t in trials if t.state.name == "COMPLETE")
    return states, per_config


def workers(storage: str, n: int, top: int, rounds: int) -> None:
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            cwd = Path(d)
            (cwd / "sub").mkdir()
            study = f"w-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            procs = [search(storage, study, top, cwd) for _ in range(n)]
            codes = [p.wait(timeout=900) for p in procs]
            states, per = stored(storage, study, cwd)
            print(f"{storage} round {r + 1}: {n} workers exit {codes}, {time.perf_counter() - t0:.1f} s; states {states}; "
                  f"{len(per)} of {top} optima stored, most copies of one: {max(per.values()) if per else 0}")


def kills(n: int, top: int, seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as d:
        cwd = Path(d)
        (cwd / "sub").mkdir()
        storage, study = "sub/s.log", "killed"
        for _ in range(n):
            p = search(storage, study, top, cwd)
            time.sleep(rng.uniform(1.0, 12.0))
            p.send_signal(signal.SIGKILL)
            p.wait()
        t0 = time.perf_counter()
        p = search(storage, study, top, cwd)
        code = p.wait(timeout=900)
        states, per = stored(storage, study, cwd)
        print(f"journal (relative path), {n} x kill -9: resume exit {code} in {time.perf_counter() - t0:.1f} s; "
              f"states {states}; {len(per)} of {top} optima stored, most copies of one: {max(per.values()) if per else 0}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--seed", type=int, default=23)
    a = ap.parse_args()
    for storage in ("sqlite:///s.db", "sub/s.log", *filter(None, [os.environ.get("FEATHERFACE_TEST_PG_URL")])):
        workers(storage, a.workers, a.top, a.rounds)
    kills(a.kills, a.top, a.seed)


if __name__ == "__main__":
    main()
