"""Latency measurement: the median's confidence interval, the stopping rule, both runtimes, the search hook."""

from __future__ import annotations

import time

import numpy as np
import pytest

from featherface_tune.deploy.latency import Latency, measure, median_ci, time_runs
from featherface_tune.models.presets import get_preset


def test_median_ci_brackets_the_median_and_narrows() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 1, 20), rng.normal(10, 1, 2000)
    for t in (small, large):
        lo, hi = median_ci(t)
        assert lo <= np.median(t) <= hi
    assert (median_ci(large)[1] - median_ci(large)[0]) < (median_ci(small)[1] - median_ci(small)[0]) / 4
    # coverage of the distribution-free interval: about 95 % of samples' intervals hold the true median
    hits = sum(lo <= 10 <= hi for lo, hi in (median_ci(rng.normal(10, 1, 40)) for _ in range(400)))
    assert 0.90 <= hits / 400 <= 0.995


def test_time_runs_stops_once_the_median_is_known() -> None:
    times, warm, ok = time_runs(lambda: time.sleep(0.002), rel_ci=0.2, max_seconds=10)
    assert ok and warm >= 10 and len(times) >= 10
    lo, hi = median_ci(times)
    assert (hi - lo) / 2 <= 0.2 * np.median(times)
    assert np.median(times) >= 2.0


def test_time_runs_respects_the_time_cap() -> None:
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    times, _, ok = time_runs(lambda: time.sleep(float(rng.choice([0.0005, 0.004]))), rel_ci=1e-6, max_seconds=1.0)
    assert not ok and time.perf_counter() - t0 < 3.0


def test_measure_torch() -> None:
    lat = measure(get_preset("retinaface-mnet025"), 64, 64, "torch", threads=1, rel_ci=0.1, max_seconds=10)
    assert isinstance(lat, Latency) and lat.runtime == "torch" and lat.threads == 1
    assert lat.input_size == (64, 64) and lat.median_ms > 0 and lat.ci_ms[0] <= lat.median_ms <= lat.ci_ms[1]
    js = lat.to_json()
    assert js["runs"] == lat.runs >= 10 and js["iqr_ms"] >= 0


@pytest.mark.slow
def test_measure_onnxruntime_and_the_search_records_it() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import optuna

    from featherface_tune.tuner import records as R
    from featherface_tune.tuner.objectives import BudgetObjective
    from featherface_tune.tuner.space import BUDGET_KNOBS, default_space

    # one export and measurement (each export takes seconds): the search's, which calls `measure`
    space = default_space().with_solve(BUDGET_KNOBS)  # as tests/tuner: FixedTrial names every knob
    spec = R.StudySpec(489_000, 0, (64, 64), ("latency",), None, space.to_dict())
    trial = optuna.trial.FixedTrial({"backbone_cbam": True, "neck": "bifpn", "bifpn_repeats": 3, "neck_channels": 42,
                                     "neck_cbam": True, "ssh_deformable": True, "shuffle": "block"})
    value = BudgetObjective(space, spec, latency_runtime="onnxruntime")(trial)
    a = trial.user_attrs
    assert a[R.FEASIBLE] and value == a[R.LATENCY_MS] > 0
    assert a[R.LATENCY_SPREAD_MS] >= 0 and a[R.LATENCY_CI] >= 0
    assert a[R.LATENCY_RUNTIME] == "onnxruntime" and a[R.LATENCY_THREADS] == 1


def test_search_json_best_rows_carry_the_latency_record(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from featherface_tune.cli import app

    monkeypatch.chdir(tmp_path)  # the study database goes to the working directory
    sure = ["--fix", "neck=bifpn", "--fix", "bifpn_repeats=3", "--fix", "neck_channels=42", "--fix",
            "backbone_cbam=true", "--fix", "neck_cbam=true", "--fix", "ssh_deformable=true"]
    r = CliRunner().invoke(app, ["search", "--target", "489000", "--objective", "latency", "--runtime", "torch",
                                 "--input-size", "64", "64", "--trials", "2", "--seed", "3", "--threads", "1", "--json", *sure])
    assert r.exit_code == 0, r.output
    assert "latency: torch, 1 thread(s), batch 1 at 64x64" in r.stderr
    best = json.loads(r.stdout)["best"]
    assert best and all(row["latency_runtime"] == "torch" and row["latency_threads"] == 1 for row in best)
    assert all(row["latency_ms"] > 0 and row["latency_spread_ms"] >= 0 and row["latency_ci"] >= 0 for row in best)
