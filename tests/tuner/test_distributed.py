"""Several `featherface-tune search` workers on one study in a real PostgreSQL database.

Needs a server: set FEATHERFACE_TEST_PG_URL (e.g. the URL `bash .ci/postgres.sh` prints).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cheap_latency import CHEAP_CLI

PG_URL = os.environ.get("FEATHERFACE_TEST_PG_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="FEATHERFACE_TEST_PG_URL not set (see .ci/postgres.sh)"),
]

WORKERS = 3
TRIALS = 45  # 15 a worker: enough that all three start while trials are left
# a narrower space (the proof takes milliseconds instead of the default space's second or two in
# each worker): sharing a study does not depend on the space
NARROW = ["--fix", "neck=bifpn", "--fix", "bifpn_repeats=3", "--fix", "neck_channels=42"]


def _worker(study: str, seed: int, cwd: Path) -> subprocess.Popen:
    # a sampled objective (closest and macs are solved: a handful of enqueued optima, whatever --trials is),
    # measured by the cheap stand-in: this test is about sharing the study
    cmd = [sys.executable, CHEAP_CLI, "search", "--target", "489000", "--trials", str(TRIALS),
           "--objective", "latency", "--latency-mode", "sampled", "--runtime", "torch", "--input-size", "64", "64",
           "--study", study, "--storage", str(PG_URL), "--seed", str(seed), "--json", *NARROW]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_workers_share_one_study(tmp_path: Path):
    import optuna

    from featherface_tune.tuner.study import open_storage

    study_name = f"distributed-{uuid.uuid4().hex[:10]}"
    procs = [_worker(study_name, seed, tmp_path) for seed in range(WORKERS)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=540)
        assert p.returncode == 0, err[-2000:]
        reports.append(json.loads(out))
    reported = [n for r in reports for n in r["worker"]["trials"]]
    # the workers really shared the study (a late starter may find little left to do)
    assert sum(1 for r in reports if r["worker"]["trials"]) >= 2, [len(r["worker"]["trials"]) for r in reports]
    # no trial reported twice
    assert len(reported) == len(set(reported))
    storage, _ = open_storage(PG_URL)  # picks the installed driver (psycopg2 or psycopg 3)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    # the study holds exactly the trials the workers reported: none lost, none duplicated
    assert sorted(numbers) == sorted(reported)
    assert len(numbers) == len(set(numbers))
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) >= TRIALS
    for t in complete:
        assert {"config", "params", "macs", "delta", "feasible", "modules"} <= set(t.user_attrs)
    assert study.user_attrs["featherface_tune"]["target"] == 489_000
    # all workers see the same best feasible configs at the end (the last to finish sees every trial)
    assert any(r["best"] for r in reports)
    optuna.delete_study(study_name=study_name, storage=storage)


# A worker that dies (SIGKILL) inside the objective of its first trial: nothing reported, its trial
# left RUNNING with a heartbeat for the others to fail and retry.
DYING_WORKER = """
import os, signal, sys
from featherface_tune.tuner.objectives import BudgetObjective
from featherface_tune.cli import app

def die(self, trial):
    os.kill(os.getpid(), signal.SIGKILL)

BudgetObjective._evaluate = die
app(sys.argv[1:])
"""


def test_soak_one_worker_killed_mid_trial(tmp_path: Path):
    import time

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from featherface_tune.tuner.study import open_storage

    study_name = f"soak-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "FEATHERFACE_TUNE_HEARTBEAT": "1,3"}
    # latency is a sampled objective (one trial per sample), measured by the cheap stand-in in the survivors
    # (SLEEP_S a trial): they run well past the grace period, so the killed worker's trial is failed and
    # retried while they work
    soak_trials = 40
    args = ["search", "--target", "489000", "--objective", "latency", "--latency-mode", "sampled", "--runtime", "torch",
            "--input-size", "64", "64", "--trials", str(soak_trials), "--study", study_name, "--storage", str(PG_URL),
            "--json", *NARROW]
    dying = subprocess.run([sys.executable, "-c", DYING_WORKER, *args, "--seed", "99"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert dying.returncode == -9, dying.stderr[-2000:]
    t_killed = time.time()
    procs = [subprocess.Popen([sys.executable, CHEAP_CLI, *args, "--seed", str(seed)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(WORKERS - 1)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=540)
        assert p.returncode == 0, err[-2000:]
        reports.append(json.loads(out))
    assert time.time() - t_killed > 3, "the survivors ended before the grace period: raise soak_trials"
    reported = [n for r in reports for n in r["worker"]["trials"]]
    assert len(reported) == len(set(reported))
    storage, _ = open_storage(PG_URL)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state.name == "FAIL"]
    # exactly the trials the survivors reported, plus the one the killed worker had in flight
    assert [t.number for t in failed] == [0]
    assert sorted(t.number for t in trials) == sorted(reported + [0])
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert len([t for t in trials if t.state.name == "COMPLETE"]) >= soak_trials
    optuna.delete_study(study_name=study_name, storage=storage)
