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


def _search(storage: str, study: str, cwd: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    cmd = [sys.executable, "-m", "featherface_tune.cli", "search", "--target", "489000", "--top", str(TOP),
           "--study", study, "--storage", storage, "--json"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


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
def test_three_workers_store_each_optimum_once(tmp_path: Path, storage: str):
    (tmp_path / "sub").mkdir()
    study = f"solved-{uuid.uuid4().hex[:8]}"
    procs = [_search(storage, study, tmp_path) for _ in range(3)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        reports.append(json.loads(out))
    states, configs = optima_stored(storage, study, tmp_path)
    assert states == {"COMPLETE": TOP}, states
    assert len(configs) == TOP and set(configs.values()) == {1}
    assert sorted(n for r in reports for n in r["worker"]["trials"]) == list(range(TOP))  # each run once


@pytest.mark.slow
def test_journal_with_a_relative_path_survives_kill_9(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    rng = random.Random(23)
    storage, study = "sub/s.log", "killed"
    for _ in range(3):
        p = _search(storage, study, tmp_path)
        time.sleep(rng.uniform(2.0, 9.0))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    p = _search(storage, study, tmp_path)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
    states, configs = optima_stored(storage, study, tmp_path)
    assert states["COMPLETE"] == TOP and not states["WAITING"] and not states["RUNNING"], states
    assert len(configs) == TOP and set(configs.values()) == {1}


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
