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

    # one export and measurement (each export takes seconds): the search's, which calls `measure`. A BiFPN
    # and DCN config: the only test exporting deformable convs at a fixed input size, as `measure` does
    space = default_space().with_solve(BUDGET_KNOBS)  # as tests/tuner: FixedTrial names every knob
    spec = R.StudySpec(489_000, 0, (64, 64), ("latency",), None, space.to_dict())
    trial = optuna.trial.FixedTrial({"backbone_cbam": True, "neck": "bifpn", "bifpn_repeats": 3, "neck_channels": 42,
                                     "neck_cbam": True, "ssh_deformable": True, "shuffle": "block"})
    value = BudgetObjective(space, spec, latency_runtime="onnxruntime")(trial)
    a = trial.user_attrs
    assert a[R.FEASIBLE] and value == a[R.LATENCY_MS] > 0
    assert a[R.LATENCY_SPREAD_MS] >= 0 and a[R.LATENCY_CI] >= 0
    assert a[R.LATENCY_RUNTIME] == "onnxruntime" and a[R.LATENCY_THREADS] == 1


def test_search_json_best_rows_carry_the_latency_record(tmp_path, monkeypatch, cheap_latency) -> None:  # type: ignore[no-untyped-def]
    """The JSON rows of a sampled latency search carry each trial's latency record (measured by the cheap
    stand-in: the search's own measurement is test_measure_onnxruntime_and_the_search_records_it's)."""
    import json

    from typer.testing import CliRunner

    from featherface_tune.cli import app

    monkeypatch.chdir(tmp_path)  # the study database goes to the working directory
    sure = ["--fix", "neck=bifpn", "--fix", "bifpn_repeats=3", "--fix", "neck_channels=42", "--fix",
            "backbone_cbam=true", "--fix", "neck_cbam=true", "--fix", "ssh_deformable=true"]
    r = CliRunner().invoke(app, ["search", "--target", "489000", "--objective", "latency", "--latency-mode", "sampled", "--runtime", "torch",
                                 "--input-size", "64", "64", "--trials", "2", "--seed", "3", "--threads", "1", "--json", *sure])
    assert r.exit_code == 0, r.output
    assert "latency: torch, 1 thread(s), batch 1 at 64x64" in r.stderr
    best = json.loads(r.stdout)["best"]
    assert best and all(row["latency_runtime"] == "torch" and row["latency_threads"] == 1 for row in best)
    assert all(row["latency_ms"] > 0 and row["latency_spread_ms"] >= 0 and row["latency_ci"] >= 0 for row in best)


# ---- the latency model: per-block tables ---------------------------------------------------------

SMALL = ["neck=fpn", "neck_channels=32", "backbone_cbam=false", "neck_cbam=false", "ssh_deformable=false",
         "shuffle=none"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "featherface-tune" / "latency"


def test_a_table_is_built_once_cached_and_predicts_the_sum_of_blocks_plus_overhead(cache, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from featherface_tune.deploy import latency_table as LT

    a = get_preset("retinaface-mnet025")
    b = a.replace(neck_channels=48, ssh_channels=32)
    notes: list[str] = []
    steps: list[tuple[str, int, int]] = []
    t = LT.get_table([a, b], "torch", 1, (32, 32), validate=2, block_seconds=0.03, config_seconds=0.2,
                     note=notes.append, progress=lambda *x: steps.append(x))
    assert t.key.path().parent == cache and t.key.path().is_file()
    assert "about" in notes[0] and steps and steps[-1][1] == steps[-1][2]
    groups = {g for g, *_ in LT.instances(a, 32, 32)} | {g for g, *_ in LT.instances(b, 32, 32)}
    assert t.groups() == groups and not t.missing([a, b])
    # within a group, points spread over the MACs the configs give (two widths -> two points)
    ssh = [p for p in t.points if p["group"][0] == "ssh" and p["group"][1] == 0]
    assert len({p["macs"] for p in ssh}) == 2
    assert t.predict(a) == pytest.approx(t.blocks_ms(a) + t.overhead_ms)
    stats = t.summary()
    assert stats["configs"] == 2 and stats["median_abs_pct_error"] is not None
    assert stats["runtime"] == "torch" and stats["input_size"] == [32, 32] and stats["cpu"]

    # the second call reuses the file: nothing is timed
    monkeypatch.setattr(LT, "extend", lambda *a, **k: (_ for _ in ()).throw(AssertionError("timed again")))
    again = LT.get_table([a, b], "torch", 1, (32, 32), note=notes.append)
    assert "reused" in notes[-1] and again.predict(a) == pytest.approx(t.predict(a))
    # another key (threads) is another file
    assert LT.table_key("torch", 2, (32, 32)).path() != t.key.path()


def test_a_config_with_a_new_block_setting_extends_the_table(cache) -> None:  # type: ignore[no-untyped-def]
    from featherface_tune.deploy import latency_table as LT

    a = get_preset("retinaface-mnet025")
    t = LT.get_table([a], "torch", 1, (32, 32), validate=1, block_seconds=0.03, config_seconds=0.2)
    dcn = a.replace(ssh_deformable=True)
    assert t.missing([dcn])
    with pytest.raises(KeyError, match="ssh"):
        t.predict(dcn)
    t2 = LT.get_table([dcn], "torch", 1, (32, 32), block_seconds=0.03)
    assert not t2.missing([a, dcn]) and t2.predict(dcn) > 0
    assert len(t2.validation) == 1  # validated once; the overhead is kept


def test_fit_is_linear_in_macs_robust_and_never_decreasing() -> None:
    from featherface_tune.deploy.latency_table import _fit

    assert _fit([(100, 1.0), (300, 3.0)]) == pytest.approx((0.0, 0.01))
    assert _fit([(100, 2.0), (300, 1.0)]) == (1.5, 0.0)  # a falling fit is noise: the median
    assert _fit([(100, 2.0), (100, 4.0)]) == (3.0, 0.0)
    # one timing hit by load does not tilt the line
    assert _fit([(100, 1.0), (200, 2.0), (300, 9.0), (400, 4.0)]) == pytest.approx((0.0, 0.01))


def test_compare_times_configs_side_by_side() -> None:
    from featherface_tune.deploy.latency import compare, indistinguishable

    a = get_preset("retinaface-mnet025")
    lats = compare([a, a.replace(neck_channels=128, ssh_channels=128)], 32, 32, "torch", 1, rel_ci=0.2,
                   max_seconds=2.0, runs_per_round=2)
    assert len(lats) == 2 and all(x.runs >= 10 and x.ci_ms[0] <= x.median_ms <= x.ci_ms[1] for x in lats)
    same = indistinguishable(lats)
    assert same[min(range(2), key=lambda i: lats[i].median_ms)] is True


class _Model:
    """A stand-in latency model: 'predicts' the SSH widths' sum (the search's plumbing, not timing)."""

    def predict(self, cfg):  # type: ignore[no-untyped-def]
        return float(sum(cfg.ssh_widths))

    def predict_exact(self, exact):  # type: ignore[no-untyped-def]
        return exact.budget[:, :3].sum(axis=1).astype("float64")

    def summary(self):  # type: ignore[no-untyped-def]
        return {"key": "fake", "median_abs_pct_error": 1.0, "kendall_tau": 1.0}


def test_latency_is_solved_under_the_model_then_finalists_are_timed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from featherface_tune import search
    from featherface_tune.tuner.space import build_space

    monkeypatch.setenv("FEATHERFACE_TUNE_LATENCY_SECONDS", "0.5")
    space = build_space(None, ["neck=bifpn", "bifpn_repeats=3", "neck_channels=42", "backbone_cbam=true",
                               "neck_cbam=true", "ssh_deformable=true", "shuffle=block"])
    res = search(489_000, space=space, objective="latency", latency_runtime="torch", input_size=(32, 32),
                 latency_model=_Model(), finalists=2)
    fin = res.solved["finalists"]  # type: ignore[index]
    whys = [w for f in fin for w in f["why"]]
    assert whys.count("predicted fastest") == 2 and "macs optimum" in whys and "closest answer" in whys
    assert [f["latency_ms"] for f in fin] == sorted(f["latency_ms"] for f in fin)
    assert fin[0]["indistinguishable_from_best"] is True
    best = min(res.best, key=lambda r: r.record.latency_predicted_ms)
    assert sum(best.config.ssh_widths) == best.record.latency_predicted_ms
    rows = [r.record for r in res.best]
    assert len(rows) == len(fin)
    for r in rows:  # every finalist: predicted, measured and its interval recorded
        lo, hi = r.latency["latency_ci_ms"]
        assert r.latency_ms is not None and lo <= r.latency_ms <= hi and r.latency_predicted_ms is not None
    assert [r.latency_ms for r in rows] == sorted(r.latency_ms for r in rows)  # type: ignore[type-var]


@pytest.mark.slow
def test_latency_command_predicts_and_measures_and_the_table_command_reuses(cache) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from featherface_tune.cli import app

    base = ["--runtime", "torch", "--threads", "1", "--input-size", "32", "32", "--validate", "1",
            "--block-seconds", "0.02"]
    r = CliRunner().invoke(app, ["latency", "--preset", "retinaface-mnet025", *base, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["predicted_ms"] > 0 and data["measured_ms"] > 0
    lo, hi = data["measured_ci_ms"]
    assert lo <= data["measured_ms"] <= hi
    assert data["table"]["runtime"] == "torch" and data["table"]["configs"] == 1
    assert "latency table:" in r.stderr and list(cache.iterdir())
    r = CliRunner().invoke(app, ["latency", "--preset", "retinaface-mnet025", *base, "--no-measure", "--json"])
    assert r.exit_code == 0, r.output
    data2 = json.loads(r.stdout)
    assert data2["measured_ms"] is None and data2["predicted_ms"] == data["predicted_ms"]
    assert "reused" in r.stderr
    r = CliRunner().invoke(app, ["latency", "--preset", "retinaface-mnet025", "--runtime", "tvm"])
    assert r.exit_code == 2 and "--runtime 'tvm'" in r.stderr and "Traceback" not in r.output


def test_latency_table_command_covers_a_targets_exact_configs(cache) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from featherface_tune.cli import app

    fix = [x for f in ["neck=bifpn", "bifpn_repeats=3", "neck_channels=42", "backbone_cbam=true", "neck_cbam=true",
                       "ssh_deformable=true", "shuffle=block", "backbone_cbam_reduction=16",
                       "neck_cbam_reduction=8", "ssh_channels_p3=56"] for x in ("--fix", f)]
    r = CliRunner().invoke(app, ["latency-table", "--runtime", "torch", "--input-size", "32", "32", "--validate", "0",
                                 "--block-seconds", "0.02", *fix, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["points"] > 0 and data["groups"] > 0 and data["configs"] == 0 and data["path"].startswith(str(cache))


def test_a_mixed_front_under_the_model_holds_the_proven_macs_optimum() -> None:
    from featherface_tune import search
    from featherface_tune.tuner.space import build_space

    space = build_space(None, ["neck=bifpn", "bifpn_repeats=3", "backbone_cbam=true", "neck_cbam=true",
                               "ssh_deformable=true", "shuffle=block"])
    res = search(489_000, space=space, objective="macs,latency", latency_model=_Model(), top=2)
    macs = search(489_000, space=space, objective="macs", top=1)
    assert res.solved is not None and res.solved["front"] == len(res.pareto) >= 2
    assert min(r.macs for r in res.pareto) == macs.best[0].macs  # the low-MAC end is the proven optimum
    fastest = min(r.record.latency_predicted_ms for r in res.pareto)  # type: ignore[type-var]
    assert fastest == min(sum(r.config.ssh_widths) for r in res.best)
