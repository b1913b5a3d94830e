"""SIGTERM (`timeout`, a CI cancel, `docker stop`) is handled like Ctrl-C: the search prints what it
found and marks the trial in flight failed, training keeps its checkpoint; both exit 143."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cheap_latency import CHEAP_CLI
from conftest import NARROW_SPACE

pytestmark = pytest.mark.slow


def _wait(predicate, proc: subprocess.Popen, seconds: float = 180) -> None:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ended before the signal: {proc.returncode}: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        if predicate():
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail("condition never met")


def _complete(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigterm_during_search(tmp_path: Path):
    (tmp_path / "narrow.toml").write_text(NARROW_SPACE, encoding="utf-8")
    db = tmp_path / "s.db"
    # latency is measured per trial (by the cheap stand-in, which sleeps in it): the signal lands inside a trial
    proc = subprocess.Popen([sys.executable, CHEAP_CLI, "search", "--target", "489000",
                             "--tolerance", "5%", "--space", "narrow.toml", "--objective", "latency", "--latency-mode", "sampled",
                             "--runtime", "torch",
                             "--input-size", "320", "320", "--trials", "10000", "--study", "t",
                             "--storage", f"sqlite:///{db}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait(lambda: _complete(db) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert "terminated after" in err and "rerun the same command to resume" in err
    assert "best feasible configs" in out  # the summary is printed
    with sqlite3.connect(db) as con:
        states = dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    assert "RUNNING" not in states, states
    assert states.get("FAIL", 0) <= 1 and states["COMPLETE"] >= 2


def test_sigterm_during_training(tmp_path: Path):
    from featherface_tune.data.demo import write_demo

    write_demo(tmp_path / "d", train=8, val=1, seed=0)
    out_dir = tmp_path / "out"
    args = [sys.executable, "-m", "featherface_tune.cli", "train", "--data", str(tmp_path / "d"), "--epochs", "500",
            "--image-size", "64", "--batch-size", "4", "--pretrained", "none", "--out", str(out_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait(lambda: (out_dir / "last.pt").is_file(), proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "terminated" in err and "--resume" in err
    assert (out_dir / "last.pt").is_file()
    assert not list(out_dir.glob(".*.tmp"))
    import torch

    state = torch.load(out_dir / "last.pt", weights_only=True)
    assert state["epoch"] >= 1


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_sigterm_inside_a_storage_write_waits_for_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str):
    """A SIGTERM landing inside a storage write is delivered when the write ends: interrupted half way,
    the SQLite write left its connection holding the database's write lock, and failing the trial in
    flight then waited on it for ever (a search hung after SIGTERM, found by CI). Deterministic: the
    signal is raised inside Optuna's own write, before its commit."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage

    from featherface_tune.errors import Terminated, sigterm_as_interrupt
    from featherface_tune.tuner.storage import open_storage

    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"
    storage, _ = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial_id = study.ask()._trial_id
    inner = RDBStorage.set_trial_user_attr if kind == "sqlite" else JournalStorage.set_trial_user_attr

    def interrupted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        signal.raise_signal(signal.SIGTERM)  # mid-write: the handler runs here, before the commit
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(RDBStorage if kind == "sqlite" else JournalStorage, "set_trial_user_attr", interrupted)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        storage.set_trial_user_attr(trial_id, "k", 1)
    assert storage.get_trial(trial_id).user_attrs["k"] == 1  # the write ended whole, then the signal came
    monkeypatch.undo()
    t0 = time.monotonic()
    storage.set_trial_user_attr(trial_id, "after", 2)  # no lock left behind
    assert time.monotonic() - t0 < 5 and storage.get_trial(trial_id).user_attrs["after"] == 2


def test_an_interrupt_stops_the_heartbeat_thread_it_left_beating():
    """An interrupt landing inside Optuna's `with get_heartbeat_thread(...)` before the thread's stop
    left it beating: a non-daemon thread, so the process never exited after printing its error (a
    SIGTERM stress run hung there). Failing the worker's trials on the way out stops it."""
    import optuna
    from optuna.storages._heartbeat import HeartbeatThread

    from featherface_tune.tuner._loop import fail_own_running

    class Beats:
        def get_heartbeat_interval(self) -> int:
            return 3600

        def record_heartbeat(self, trial_id: int) -> None:
            pass

    left = HeartbeatThread(0, Beats())  # type: ignore[arg-type]
    left.start()  # as Optuna's `with` does, whose exit the interrupt skipped
    try:
        fail_own_running(optuna.create_study())
        left._thread.join(timeout=5)  # type: ignore[union-attr]
        assert not left._thread.is_alive()  # type: ignore[union-attr]
    finally:
        left._stop_event.set()  # type: ignore[union-attr]  # a failing test must not hang pytest's exit too


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_a_swallowed_sigterm_still_stops_the_search(tmp_path: Path, storage: str):
    """SIGTERM handled where Python ignores the exception it raises (a finalizer the garbage collector
    runs, a weakref callback: here an objective that swallows it) must still end the search, after the
    trial in flight: one CI run saw a worker keep sampling for minutes after SIGTERM."""
    from featherface_tune.errors import sigterm_as_interrupt
    from featherface_tune.tuner.api import search

    calls = []

    def swallowing(cfg):  # type: ignore[no-untyped-def]
        calls.append(cfg)
        if len(calls) == 3:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)  # the handler runs here and raises Terminated, which is swallowed
            except KeyboardInterrupt:
                pass
        return float(cfg.neck_channels)

    (tmp_path / "narrow.toml").write_text(NARROW_SPACE, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 's.db'}" if storage == "sqlite" else str(tmp_path / "s.log")
    with sigterm_as_interrupt():
        res = search(489000, tolerance="5%", space=tmp_path / "narrow.toml", objective=swallowing, trials=50,
                     storage=url, study="t", seed=0)
    assert res.interrupted and len(calls) == 3
