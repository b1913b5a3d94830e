"""Several workers on one solved study (closest/macs: the optima are enqueued as trials) store each
optimum exactly once, none dropped and none left WAITING or RUNNING, on SQLite, a journal (given by a
relative path) and, when FEATHERFACE_TEST_PG_URL is set, PostgreSQL. A journal search killed with
kill -9 at random points resumes to completion. SIGTERM in the middle of a checkpoint write exits 143
and leaves the whole file. (benchmarks/solved_workers_stress.py repeats the kills 20 times.)"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TOP = 12  # optima of the solved search
PG_URL = os.environ.get("FEATHERFACE_TEST_PG_URL")


# the CLI with JOURNAL_LOCK_GRACE set from its first argument; with KILL_AT_MARK=N, the worker kills
# itself (kill -9) at its N-th record of its pid on a queued trial: 1 marks the first trial before
# the claim, 2 again after it (before the trial runs)
CLI_WITH_LOCK_GRACE = """
import os, signal, sys
import featherface_tune.tuner._loop as loop
import featherface_tune.tuner.storage as storage
storage.JOURNAL_LOCK_GRACE = int(sys.argv.pop(1))
kill_at, marks, mark = int(os.environ.get("KILL_AT_MARK", "0")), [], loop._mark_worker
def counted(*args):
    marks.append(1)
    if len(marks) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return mark(*args)
loop._mark_worker = counted
from featherface_tune.cli import app
app(sys.argv[1:], prog_name="featherface-tune")
"""


def _search(storage: str, study: str, cwd: Path, space: Path, journal_lock_grace: int | None = None,
            kill_at_mark: int = 0) -> subprocess.Popen:  # type: ignore[type-arg]
    """A solved search as a worker process; `journal_lock_grace`: seconds after which it takes over a
    journal lock a killed worker left (default JOURNAL_LOCK_GRACE). In the narrow space (51 exact
    configs, proved in milliseconds instead of the default space's 2 s a worker): the optima are
    enqueued and claimed the same way whatever the space."""
    cli = ([sys.executable, "-m", "featherface_tune.cli"] if journal_lock_grace is None
           else [sys.executable, "-c", CLI_WITH_LOCK_GRACE, str(journal_lock_grace)])
    cmd = cli + ["search", "--target", "489000", "--top", str(TOP), "--space", str(space), "--study", study,
                 "--storage", storage, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT_MARK": str(kill_at_mark)}
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _resume_to_completion(storage: str, study: str, cwd: Path, space: Path) -> None:
    """One clean worker after the killed ones: it exits 0 and the study holds every optimum once,
    nothing left WAITING or RUNNING (a journal lock a kill left is taken over after 1 s)."""
    p = _search(storage, study, cwd, space, journal_lock_grace=1)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
    states, configs = optima_stored(storage, study, cwd)
    assert states["COMPLETE"] == TOP and not states["WAITING"] and not states["RUNNING"], states
    assert len(configs) == TOP and set(configs.values()) == {1}


def optima_stored(storage: str, study: str, cwd: Path) -> tuple[collections.Counter, collections.Counter]:  # type: ignore[type-arg]
    """(states of every trial, COMPLETE trials per distinct config) of the study."""
    import optuna

    from featherface_tune.tuner.study import open_storage

    old = Path.cwd()
    os.chdir(cwd)  # a relative journal path means the same file as for the workers
    try:
        trials = optuna.load_study(study_name=study, storage=open_storage(storage)[0]).get_trials(deepcopy=False)
    finally:
        os.chdir(old)
    states = collections.Counter(t.state.name for t in trials)
    configs = collections.Counter(json.dumps(t.user_attrs["config"], sort_keys=True)
                                  for t in trials if t.state.name == "COMPLETE")
    return states, configs


STORAGES = ["sqlite:///s.db", "sub/s.log"]
if PG_URL:
    STORAGES.append(PG_URL)


@pytest.mark.slow
@pytest.mark.parametrize("storage", STORAGES)
def test_three_workers_store_each_optimum_once(tmp_path: Path, narrow_space: Path, storage: str):
    (tmp_path / "sub").mkdir()
    study = f"solved-{uuid.uuid4().hex[:8]}"
    procs = [_search(storage, study, tmp_path, narrow_space) for _ in range(3)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        reports.append(json.loads(out))
    states, configs = optima_stored(storage, study, tmp_path)
    assert states == {"COMPLETE": TOP}, states
    assert len(configs) == TOP and set(configs.values()) == {1}
    assert sorted(n for r in reports for n in r["worker"]["trials"]) == list(range(TOP))  # each run once


def _records(journal: Path) -> int:
    """Records (lines) in a journal so far (0 before it exists)."""
    try:
        return journal.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_journal_with_a_relative_path_survives_kill_9(tmp_path: Path, narrow_space: Path):
    (tmp_path / "sub").mkdir()
    rng = random.Random(23)
    storage, study = "sub/s.log", "killed"
    journal = tmp_path / storage
    for _ in range(3):
        # at a random point of the writes (a whole search writes about 300 records: the study, 12
        # enqueued optima, then each trial's), not after a fixed time, which may land after the end
        kill_at = _records(journal) + rng.randint(1, 80)
        p = _search(storage, study, tmp_path, narrow_space, journal_lock_grace=1)
        deadline = time.time() + 120
        while _records(journal) < kill_at and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        assert p.poll() is None, f"the search ended before it was killed: {p.communicate()[1][-2000:]}"
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    # a kill mostly lands while the worker holds the journal lock (it reads the journal before each
    # write): the next worker takes the lock over after the grace, 1 s here instead of 10
    _resume_to_completion(storage, study, tmp_path, narrow_space)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at, left", [(1, {"WAITING": TOP}), (2, {"RUNNING": 1, "WAITING": TOP - 1})],
                         ids=["before-the-claim", "after-the-claim"])
def test_a_worker_killed_around_its_claim_leaves_none_running(tmp_path: Path, narrow_space: Path, kill_at: int,
                                                              left: dict):  # type: ignore[type-arg]
    """A worker marks a queued trial with its pid before it claims it (RUNNING) and again after: killed
    between the two writes, it leaves a WAITING trial; killed after the claim, a RUNNING trial whose
    dead worker the next worker sees (`abandoned`) and reruns. Never a RUNNING trial nobody owns."""
    (tmp_path / "sub").mkdir()
    storage, study = "sub/s.log", "gap"
    p = _search(storage, study, tmp_path, narrow_space, journal_lock_grace=1, kill_at_mark=kill_at)
    _, err = p.communicate(timeout=600)
    assert p.returncode == -signal.SIGKILL, err[-2000:]
    states, _ = optima_stored(storage, study, tmp_path)
    assert states == left, states  # killed inside its first claim
    _resume_to_completion(storage, study, tmp_path, narrow_space)


def test_sigterm_in_a_checkpoint_write_waits_for_the_write(tmp_path: Path):
    import torch

    from featherface_tune.atomic import atomic_write
    from featherface_tune.errors import Terminated, interrupt_exit_code, sigterm_as_interrupt

    target = tmp_path / "last.pt"
    state = {"w": torch.arange(10_000, dtype=torch.float32)}

    def write(f):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while torch's zip writer runs
        torch.save(state, f)

    with pytest.raises(Terminated) as caught:
        with sigterm_as_interrupt():
            atomic_write(target, write)
    assert interrupt_exit_code(caught.value) == 143
    assert torch.equal(torch.load(target, weights_only=True)["w"], state["w"])  # the whole checkpoint
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _complete(storage: str, cwd: Path) -> int:
    """COMPLETE trials of study "t" so far (0 while it does not exist yet)."""
    try:
        states, _ = optima_stored(storage, "t", cwd)
    except Exception:  # noqa: BLE001 - not created yet, or mid-write
        return 0
    return states.get("COMPLETE", 0)


# a sampled search in the narrow space; SIGUSR1 dumps its threads' stacks (the test asks for them when
# the worker does not exit after SIGTERM)
SAMPLED_WORKER = """
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
from featherface_tune.errors import sigterm_as_interrupt
from featherface_tune.tuner.api import search

def slow(cfg):  # a sampled objective: the signal lands in it or in Optuna's sampling
    time.sleep(0.02)
    return float(cfg.neck_channels)

with sigterm_as_interrupt():
    try:
        res = search(489000, tolerance="5%", space=sys.argv[1], objective=slow, trials=100000,
                     storage=sys.argv[2], study="t", seed=0)
    except KeyboardInterrupt:  # before the trials (the proof, opening the storage): as the CLI does
        sys.exit(143)
sys.exit(143 if res.interrupted else 0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite:///s.db", "sub/s.log"])
def test_sigterm_leaves_no_trial_running(tmp_path: Path, narrow_space: Path, storage: str):
    import optuna

    from featherface_tune.tuner.study import open_storage

    (tmp_path / "sub").mkdir()
    rng = random.Random(143)
    for _ in range(3):
        before = _complete(storage, tmp_path)
        p = subprocess.Popen([sys.executable, "-c", SAMPLED_WORKER, str(narrow_space), storage], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 180
        while time.time() < deadline and p.poll() is None and _complete(storage, tmp_path) <= before:
            time.sleep(0.3)
        time.sleep(rng.uniform(0.0, 0.5))  # then anywhere: in the objective, in sampling, in tell (trials take tens of ms)
        p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # a hang: fail with where the worker is stuck
            p.send_signal(signal.SIGUSR1)
            time.sleep(2)
            p.kill()
            _, err = p.communicate()
            pytest.fail(f"the worker did not exit within 120 s of SIGTERM; its threads:\n{err[-8000:]}")
        assert p.returncode == 143, err[-2000:]
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        trials = optuna.load_study(study_name="t", storage=open_storage(storage)[0]).get_trials(deepcopy=False)
    finally:
        os.chdir(old)
    states = collections.Counter(t.state.name for t in trials)
    assert states["COMPLETE"] > 0 and not states["RUNNING"], states
