"""A worker killed mid-trial: heartbeats fail its trial and the next worker retries it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

ARGS = ["search", "--target", "489000", "--tolerance", "5%", "--objective", "latency", "--input-size", "640", "640",
        "--study", "hb", "--seed", "0"]


def test_killed_worker_trial_is_failed_and_retried(tmp_path: Path):
    env = {**os.environ, "FEATHERFACE_TUNE_HEARTBEAT": "1,2"}
    url = f"sqlite:///{tmp_path / 'featherface-tune.db'}"
    stale = None
    for _attempt in range(5):  # a trial may finish between being seen and the kill: try again
        err = tmp_path / "worker-a.err"
        with err.open("wb") as err_file:
            a = subprocess.Popen([sys.executable, "-m", "featherface_tune.cli", *ARGS, "--trials", "200"],
                                 cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
        try:
            deadline = time.time() + 120
            killed = False
            while time.time() < deadline and not killed:
                time.sleep(0.05)
                if a.poll() is not None:  # it ended on its own before it could be killed
                    if a.returncode != 0:
                        pytest.fail(f"worker exited with {a.returncode}: {err.read_text(errors='replace')[-2000:]}")
                    break
                try:
                    trials = optuna.load_study(study_name="hb", storage=url).get_trials(deepcopy=False)
                except Exception:
                    continue
                if (any(t.state == TrialState.RUNNING for t in trials)
                        and any(t.state == TrialState.COMPLETE for t in trials)):
                    os.kill(a.pid, signal.SIGKILL)
                    killed = True
        finally:
            if a.poll() is None:
                a.kill()
            a.wait()
        # what the dead worker left RUNNING is decided after the kill, not before it
        study = optuna.load_study(study_name="hb", storage=url)
        running = [t.number for t in study.trials if t.state == TrialState.RUNNING]
        if running:
            stale = running[0]
            break
    assert stale is not None, "never killed a worker with a trial in flight"
    assert study.trials[stale].state == TrialState.RUNNING  # the killed worker left it behind
    time.sleep(3)  # past the grace period
    done = sum(t.state == TrialState.COMPLETE for t in study.trials)
    b = subprocess.run([sys.executable, "-m", "featherface_tune.cli", *ARGS, "--trials", str(done + 3), "--json"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    study = optuna.load_study(study_name="hb", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert trials[stale].state == TrialState.FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == stale]
    assert retried and retried[0].state == TrialState.COMPLETE
    assert retried[0].number in json.loads(b.stdout)["worker"]["trials"]
    assert retried[0].params == trials[stale].params  # the same sampled knobs, re-run
