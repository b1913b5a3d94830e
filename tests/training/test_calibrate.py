"""calibrate: rank statistics on hand-built rankings with known tau/rho, config spreading, the
analysis of stored runs, the CLI's JSON and report hook, and resume after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.counter.analytic import count
from featherface_tune.errors import InputError
from featherface_tune import calibration as C
from featherface_tune.tuner.space import build_space

REPO = Path(__file__).resolve().parents[2]


# ---- statistics -------------------------------------------------------------------------------

def test_tau_and_rho_on_known_rankings() -> None:
    assert C.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert C.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one discordant pair of six: (5 - 1) / 6; rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12/60
    assert C.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert C.spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # n = 5, ranks (1 2 3 4 5) vs (2 1 4 3 5): 2 discordant of 10 -> 0.6; d^2 sum 4 -> 1 - 24/120
    x, y = [0.1, 0.2, 0.3, 0.4, 0.5], [0.02, 0.01, 0.04, 0.03, 0.05]
    assert C.kendall_tau(x, y) == pytest.approx(0.6)
    assert C.spearman_rho(x, y) == pytest.approx(0.8)
    # monotone transforms do not change rank statistics
    assert C.kendall_tau(x, [v ** 3 for v in y]) == pytest.approx(0.6)


def test_undefined_statistics_are_nan() -> None:
    assert math.isnan(C.kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(C.spearman_rho([1, 2, 3], [5, 5, 5]))
    assert math.isnan(C.kendall_tau([1], [2]))


def test_bootstrap_ci() -> None:
    lo, hi = C.bootstrap_ci([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], C.kendall_tau)
    assert (lo, hi) == (pytest.approx(1.0), pytest.approx(1.0))  # every defined resample is concordant
    x = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    y = [0.2, 0.1, 0.4, 0.3, 0.6, 0.5, 0.8, 0.7]
    lo, hi = C.bootstrap_ci(x, y, C.kendall_tau, n_boot=500, seed=1)
    assert -1 <= lo <= C.kendall_tau(x, y) <= hi <= 1 and lo < hi
    assert C.bootstrap_ci(x, y, C.kendall_tau, n_boot=500, seed=1) == (lo, hi)  # seeded
    assert all(math.isnan(v) for v in C.bootstrap_ci([1], [1], C.kendall_tau))


def test_seed_kendall_tau() -> None:
    assert C.seed_kendall_tau([[1, 1], [2, 2], [3, 3]]) == pytest.approx(1.0)
    assert C.seed_kendall_tau([[1, 3], [2, 2], [3, 1]]) == pytest.approx(-1.0)
    # three seeds: pairs (0,1)=1, (0,2)=-1/3, (1,2)=-1/3 -> mean 1/9
    per = [[1, 1, 2], [2, 2, 3], [3, 3, 1]]
    assert C.seed_kendall_tau(per) == pytest.approx((1 - 1 / 3 - 1 / 3) / 3)
    assert math.isnan(C.seed_kendall_tau([[1], [2]]))


def test_spread_values() -> None:
    assert C.spread_values(list(range(16, 129, 4)), 4) == [16, 52, 92, 128]
    assert C.spread_values([8, 4], 5) == [4, 8]


# ---- configs ----------------------------------------------------------------------------------

def test_pick_configs_exact_and_spread_over_p3() -> None:
    cfgs = C.pick_configs(build_space(), 489_000, 4, seed=3)
    assert len(set(cfgs)) == 4
    assert all(count(c, 640, 640).params == 489_000 for c in cfgs)
    p3 = [c.ssh_channels[0] if isinstance(c.ssh_channels, tuple) else c.ssh_channels for c in cfgs]
    assert p3 == sorted(p3) and len(set(p3)) == 4
    assert p3[0] <= 40 and p3[-1] >= 100  # both ends of 16..128, not the fewest-MACs corner only
    assert C.pick_configs(build_space(), 489_000, 4, seed=3) == cfgs  # seeded
    with pytest.raises(InputError, match="^configs=1: need at least 2 configs to compare rankings$"):
        C.pick_configs(build_space(), 489_000, 1)


# ---- analysis of stored runs --------------------------------------------------------------------

def _runs(settings: C.CalibrationSettings, proxy: dict[int, list[list[float]]], ref: list[float]) -> dict:
    runs = {}
    for e, per_config in proxy.items():
        for c, seeds in enumerate(per_config):
            for s, v in enumerate(seeds):
                k = C.RunSpec(c, "proxy", e, s).key
                runs[k] = {"key": k, "role": "proxy", "value": v, "seconds": float(e)}
    for c, v in enumerate(ref):
        k = C.RunSpec(c, "reference", settings.reference_epochs, 0).key
        runs[k] = {"key": k, "role": "reference", "value": v, "seconds": 10.0}
    return runs


def test_analyse_names_the_cheapest_fidelity_clearing_min_tau() -> None:
    st = C.CalibrationSettings(data=".", target=1, epochs=(1, 2), reference_epochs=5, seeds=2)
    ref = [0.1, 0.2, 0.3, 0.4, 0.5]
    # fidelity 1: the seeds rank in opposite orders and every mean is 0.5 (exact in binary)
    proxy = {1: [[0.75, 0.25], [0.625, 0.375], [0.5, 0.5], [0.375, 0.625], [0.25, 0.75]],
             2: [[0.01, 0.02], [0.03, 0.02], [0.02, 0.04], [0.05, 0.04], [0.06, 0.07]]}
    a = C.analyse(st, 5, _runs(st, proxy, ref), min_tau=0.7, n_boot=200)
    f1, f2 = a["fidelities"]
    assert f1["kendall_tau"] is None and f1["spearman"] is None  # undefined, shown as null
    assert f1["seed_kendall_tau"] == pytest.approx(-1.0)
    # means 0.015 0.025 0.03 0.045 0.065 rank like the reference
    assert f2["kendall_tau"] == pytest.approx(1.0) and f2["spearman"] == pytest.approx(1.0)
    assert a["chosen_epochs"] == 2 and a["kendall_tau"] == pytest.approx(1.0)
    assert f2["proxy_seconds_per_config"] == pytest.approx(4.0)  # 2 seeds x 2 s
    assert C.analyse(st, 5, _runs(st, proxy, ref), min_tau=1.1, n_boot=50)["chosen_epochs"] is None
    # a config without its reference is left out, not counted as zero
    partial = _runs(st, proxy, ref)
    partial.pop(C.RunSpec(4, "reference", 5, 0).key)
    assert C.analyse(st, 5, partial, n_boot=50)["fidelities"][1]["configs"] == 4


def test_settings_validate() -> None:
    with pytest.raises(InputError, match=r"^reference_epochs=2: must exceed the proxy epochs \(2\)$"):
        C.CalibrationSettings(data=".", target=1, epochs=(2,), reference_epochs=2).validate()
    with pytest.raises(InputError, match="image_size|image-size"):
        C.CalibrationSettings(data=".", target=1, epochs=(1,), reference_epochs=2, image_size=50).validate()


# ---- the command ----------------------------------------------------------------------------------

TINY = ["--configs", "2", "--epochs", "1", "--reference-epochs", "2", "--image-size", "64",
        "--subset", "8", "--val-subset", "0.25", "--val-max-side", "96", "--device", "cpu", "--threads", "1",
        "--batch-size", "4"]  # 4: BatchNorm recalibration before each evaluation draws 8 batches


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from featherface_tune.data.demo import write_demo

    root = tmp_path_factory.mktemp("demo")
    write_demo(root, train=16, val=8, seed=0)
    return root


# an FPN without deformable convs or neck CBAM: its configs train faster on a CPU, and its proof is quick
# (the resume and the report do not depend on the architecture)
LIGHT_SPACE = 'neck = "fpn"\nssh_deformable = false\nneck_cbam = false\nshuffle = "none"\n'


@pytest.mark.slow
def test_calibrate_json_report_and_resume_after_kill(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal"
    space = tmp_path / "light.toml"
    space.write_text(LIGHT_SPACE, encoding="utf-8")
    cmd = [sys.executable, "-m", "featherface_tune.cli", "calibrate", "--proxy-data", str(demo),
           "--out", str(out), "--space", str(space), "--json"] + TINY
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    # kill it once a run has finished and the next one has written its first checkpoint
    in_flight: set[str] = set()
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = {r for r in C.read_runs(out)}
        ckpts = {p.parent.name for p in (out / "runs").glob("*/last.pt")} if (out / "runs").is_dir() else set()
        in_flight = ckpts - done
        if done and in_flight:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode != 0, "the calibration finished before it could be killed"
    before = C.read_runs(out)
    assert before and in_flight

    # the rerun in this process: only the kill needs a process of its own
    res = CliRunner().invoke(app, cmd[3:])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    lines = (out / C.RUNS_FILE).read_text().splitlines()
    keys = [json.loads(ln)["key"] for ln in lines]
    assert len(keys) == len(set(keys)) == 6  # 2 configs x (2 proxy seeds + 1 reference), none redone
    assert len(data["runs"]) == 6 and data["runs_done"] == 6
    resumed = {r["key"] for r in data["runs"] if r["resumed"]}
    assert resumed == in_flight - set(before)  # the run in flight continued from its checkpoint
    for k in ("kendall_tau", "spearman", "seed_kendall_tau"):
        assert data[k] is None or -1 <= data[k] <= 1
    assert {"kendall_tau_ci", "spearman_ci", "fidelities", "config_list"} <= set(data)
    assert data["synthetic_data"] is True
    assert all(r["seconds"] > 0 and set(r["ap"]) == {"easy", "medium", "hard"} for r in data["runs"])

    rep = CliRunner().invoke(app, ["report", str(out), "--json"])
    assert rep.exit_code == 0, rep.output
    assert json.loads(rep.stdout) == data  # the run's own analysis is what the folder reads back
    rep = CliRunner().invoke(app, ["report", str(out)])
    assert rep.exit_code == 0 and "proxy vs reference" in rep.stdout

    # other settings on the same folder: a one-line error, nothing overwritten
    bad = CliRunner().invoke(app, ["calibrate", "--proxy-data", str(demo), "--out", str(out), "--space", str(space)]
                             + [a if b != "--reference-epochs" else "3" for b, a in zip([""] + TINY, TINY)])
    assert bad.exit_code != 0 and "reference_epochs=2" in bad.output
    assert (out / C.RUNS_FILE).read_text().splitlines() == lines


def test_calibrate_bad_input_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["calibrate", "--proxy-data", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "--proxy-data" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["calibrate", "--proxy-data", str(tmp_path), "--epochs", "4",
                                 "--reference-epochs", "3"])
    assert r.exit_code != 0 and "--reference-epochs 3: must exceed the proxy --epochs (4)" in r.output
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code != 0 and "no calibration" in r.output


@pytest.mark.parametrize("text", ['{"format": "featherface-tune/calibration", "sett', "[1, 2]", '{"format": "x"}'])
def test_a_damaged_plan_is_one_line(tmp_path: Path, text: str) -> None:
    (tmp_path / C.PLAN_FILE).write_text(text, encoding="utf-8")
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "plan.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
