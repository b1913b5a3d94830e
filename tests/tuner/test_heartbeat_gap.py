"""The gap Optuna leaves between creating a trial and its first heartbeat is closed: a trial has a
heartbeat from its creation, a RUNNING trial without one counts as stale after the grace period, a
worker killed exactly there has its trial failed and retried by the next one, and a worker whose trial
was failed under it logs and goes on."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from cheap_latency import CHEAP_CLI

from featherface_tune.tuner import study as S

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                        "ignore:Heartbeat of storage:UserWarning")


def _heartbeats(db: Path) -> dict[int, int]:
    """trial number -> heartbeat rows."""
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT t.number, COUNT(h.trial_heartbeat_id) FROM trials t LEFT JOIN "
                                "trial_heartbeats h ON h.trial_id = t.trial_id GROUP BY t.number").fetchall())


def _storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str = "1,2"):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FEATHERFACE_TUNE_HEARTBEAT", setting)
    db = tmp_path / "s.db"
    storage, info = S.open_storage(f"sqlite:///{db}")
    return storage, db


def test_trial_has_a_heartbeat_from_its_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    storage, db = _storage(tmp_path, monkeypatch)
    study = optuna.create_study(storage=storage, study_name="s")
    study.ask()  # created RUNNING: no heartbeat thread has run yet
    study.enqueue_trial({"x": 1.0})
    study.ask()  # a queued trial starts RUNNING
    assert _heartbeats(db) == {0: 1, 1: 1}


def test_heartbeatless_running_trial_is_stale_after_the_grace_period(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    plain = optuna.storages.RDBStorage(url)  # as Optuna (or an older featherface-tune) leaves it
    study = optuna.create_study(storage=plain, study_name="s")
    orphan = study.ask()
    ours = S.HeartbeatStorage(url, heartbeat_interval=1, grace_period=2)
    sid = ours.get_study_id_from_name("s")
    assert ours._get_stale_trial_ids(sid) == []  # younger than the grace period: may be alive
    time.sleep(2.5)
    assert ours._get_stale_trial_ids(sid) == [orphan._trial_id]
    optuna.storages.fail_stale_trials(optuna.load_study(study_name="s", storage=ours))
    assert ours.get_trial(orphan._trial_id).state == TrialState.FAIL


def test_worker_survives_its_trial_failed_by_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture):
    storage, _db = _storage(tmp_path, monkeypatch)
    study = optuna.create_study(storage=storage, study_name="s")
    calls = []

    def objective(trial):  # type: ignore[no-untyped-def]
        calls.append(trial.number)
        if len(calls) == 2:  # another worker judges this trial stale mid-run
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return trial.suggest_float("x", 0, 1)

    with caplog.at_level(logging.WARNING, logger="featherface_tune.tuner._loop"):
        S.run(study, objective, 4, None)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1
    assert "another worker failed this worker's trial" in caplog.text


WORKER = textwrap.dedent("""
    import os, signal, sys
    import optuna.study._optimize as optimize
    sys.path.insert(0, os.path.dirname(os.environ["CHEAP_CLI"]))
    import cheap_latency
    from featherface_tune.cli import app

    cheap_latency.install()  # a sampled objective that costs nothing: the trials go through Optuna's loop

    real = optimize.get_heartbeat_thread
    kill_at = int(os.environ["KILL_AT_TRIAL_ID"])

    def killing(trial_id, storage):
        # the exact point: the trial exists (RUNNING), Optuna's heartbeat thread has not started
        if trial_id >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(trial_id, storage)

    optimize.get_heartbeat_thread = killing
    app(sys.argv[1:])
""")


@pytest.mark.slow
def test_worker_killed_before_its_first_heartbeat_leaves_no_running_trial(tmp_path: Path, narrow_space_file: Path):
    env = {**os.environ, "FEATHERFACE_TUNE_HEARTBEAT": "1,2", "KILL_AT_TRIAL_ID": "4", "CHEAP_CLI": CHEAP_CLI}
    db = tmp_path / "s.db"
    # a sampled (measured) objective: solved objectives run queued trials, not Optuna's heartbeat loop
    args = ["search", "--target", "489000", "--tolerance", "5%", "--space", str(narrow_space_file),
            "--objective", "latency", "--latency-mode", "sampled", "--runtime", "torch", "--input-size", "64", "64",
            "--study", "gap", "--seed", "0", "--storage", f"sqlite:///{db}"]
    a = subprocess.run([sys.executable, "-c", WORKER, *args, "--trials", "50"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert a.returncode == -9, a.stderr[-2000:]
    study = optuna.load_study(study_name="gap", storage=f"sqlite:///{db}")
    orphan = study.trials[3]
    assert orphan.state == TrialState.RUNNING and not orphan.params  # killed before sampling anything
    assert _heartbeats(db)[3] == 1  # ... but it already has a heartbeat, so others can fail it
    time.sleep(2.5)  # past the grace period
    env.pop("KILL_AT_TRIAL_ID")
    b = subprocess.run([sys.executable, CHEAP_CLI, *args, "--trials", "6", "--json"], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    trials = optuna.load_study(study_name="gap", storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    assert trials[3].state == TrialState.FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 3]
    assert retried and retried[0].state == TrialState.COMPLETE


@pytest.fixture
def narrow_space_file(tmp_path: Path) -> Path:
    p = tmp_path / "narrow.toml"
    p.write_text('neck = "bifpn"\nneck_channels = { min = 40, max = 44 }\n', encoding="utf-8")
    return p
