"""The trial function on FixedTrial: records, constraints, objectives, proxy hook."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import optuna
import pytest

from featherface_tune.errors import InputError
from featherface_tune.tuner import records as R
from featherface_tune.tuner.objectives import (
    BudgetObjective, Fidelity, TrialFailed, load_proxy, parse_objectives,
)
from featherface_tune.tuner.solve import Solver
from featherface_tune.tuner.space import BUDGET_KNOBS, default_space


def _space():
    """The default space with BiFPN repeats sampled (not solved), so FixedTrial names them."""
    return default_space().with_solve(BUDGET_KNOBS)

OFFICIAL = {"backbone_cbam": True, "neck": "bifpn", "bifpn_repeats": 3, "neck_channels": 42,
            "neck_cbam": True, "ssh_deformable": True, "shuffle": "block"}


def _spec(objectives=("macs",), tolerance=0, max_macs=None, size=(640, 640)):
    return R.StudySpec(489_000, tolerance, size, tuple(objectives), max_macs, _space().to_dict())


def test_exact_trial_records_everything():
    trial = optuna.trial.FixedTrial(OFFICIAL)
    value = BudgetObjective(_space(), _spec())(trial)
    a = trial.user_attrs
    assert a[R.PARAMS] == 489_000 and a[R.DELTA] == 0 and a[R.FEASIBLE] is True
    assert value == float(a[R.MACS])
    assert sum(m["params"] for m in a[R.MODULES].values()) == a[R.PARAMS]
    assert sum(m["macs"] for m in a[R.MODULES].values()) == a[R.MACS]
    assert a[R.CONFIG]["ssh_channels"] == [56, 72, 72] and a[R.CONFIG]["neck_cbam_reduction"] == 8
    assert trial.constraints == {"params": 0.0}
    assert set(R.TRIAL_KEYS) - set(a) == {R.LATENCY_MS, *R.LATENCY_DETAIL, R.PROXY_AP, R.FAIL_REASON}


def test_infeasible_trial_has_a_positive_constraint():
    trial = optuna.trial.FixedTrial({**OFFICIAL, "neck_channels": 128, "bifpn_repeats": 4})
    BudgetObjective(_space(), _spec())(trial)
    a = trial.user_attrs
    assert a[R.FEASIBLE] is False and a[R.DELTA] > 0
    assert trial.constraints["params"] == a[R.DELTA] > 0


def test_max_macs_constraint():
    trial = optuna.trial.FixedTrial(OFFICIAL)
    BudgetObjective(_space(), _spec(max_macs=1000))(trial)
    assert trial.user_attrs[R.FEASIBLE] is False
    assert trial.constraints["macs"] > 0 and trial.constraints["params"] <= 0


def test_latency_objective_is_measured_on_feasible_configs_only():
    spec = _spec(("macs", "latency"), size=(64, 64))
    trial = optuna.trial.FixedTrial(OFFICIAL)
    values = BudgetObjective(_space(), spec)(trial)
    assert values[0] == trial.user_attrs[R.MACS]
    assert values[1] == trial.user_attrs[R.LATENCY_MS] > 0
    bad = optuna.trial.FixedTrial({**OFFICIAL, "neck_channels": 128, "bifpn_repeats": 4})
    values = BudgetObjective(_space(), spec)(bad)
    assert math.isinf(values[1]) and R.LATENCY_MS not in bad.user_attrs


def test_proxy_objective_hook(monkeypatch, tmp_path: Path):
    calls = []

    def fake(cfg, data_dir, fidelity, trial):
        calls.append((cfg.neck_channels, data_dir, dict(fidelity), trial))
        return 0.5

    mod = types.ModuleType("featherface_tune.training.proxy")
    mod.proxy_objective = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "featherface_tune.training.proxy", mod)
    fn = load_proxy(tmp_path)
    fid = Fidelity(epochs=2, subset=0.1, metric="hard")
    obj = BudgetObjective(_space(), _spec(("proxy_ap",)), fn, tmp_path, fid)
    trial = optuna.trial.FixedTrial(OFFICIAL)
    assert obj(trial) == 0.5 and trial.user_attrs[R.PROXY_AP] == 0.5
    assert calls == [(42, tmp_path, {"epochs": 2, "subset": 0.1, "metric": "hard"}, None)]
    # infeasible: no training, worst value
    bad = optuna.trial.FixedTrial({**OFFICIAL, "neck_channels": 128, "bifpn_repeats": 4})
    assert obj(bad) == 0.0 and len(calls) == 1


def test_proxy_failure_is_recorded(monkeypatch, tmp_path: Path):
    def boom(cfg, data_dir, fidelity, trial):
        raise RuntimeError("loss is NaN")

    obj = BudgetObjective(_space(), _spec(("proxy_ap",)), boom, tmp_path, Fidelity())
    trial = optuna.trial.FixedTrial(OFFICIAL)
    with pytest.raises(TrialFailed):
        obj(trial)
    assert trial.user_attrs[R.FAIL_REASON] == "RuntimeError: loss is NaN"


def test_bad_proxy_data_stops_the_search(tmp_path: Path):
    def no_data(cfg, data_dir, fidelity, trial):
        raise InputError(f"no WIDERFace train annotations under {data_dir}")

    obj = BudgetObjective(_space(), _spec(("proxy_ap",)), no_data, tmp_path, Fidelity())
    trial = optuna.trial.FixedTrial(OFFICIAL)
    with pytest.raises(InputError, match="no WIDERFace"):  # not TrialFailed: every trial would fail alike
        obj(trial)
    assert trial.user_attrs[R.FAIL_REASON].startswith("InputError: no WIDERFace")


def test_missing_proxy_module_is_one_line(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "featherface_tune.training.proxy", None)
    with pytest.raises(InputError, match="cannot be imported") as info:
        load_proxy(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="not a directory"):
        load_proxy(tmp_path / "missing")


def test_parse_objectives():
    assert parse_objectives(None, False) == ("macs",)
    assert parse_objectives(None, True) == ("proxy_ap",)
    assert parse_objectives("macs,latency", False) == ("macs", "latency")
    assert parse_objectives("latency", True) == ("latency", "proxy_ap")
    with pytest.raises(InputError, match="unknown objective"):
        parse_objectives("speed", False)
    with pytest.raises(InputError, match="needs --proxy-data"):
        parse_objectives("proxy", False)
    with pytest.raises(InputError, match="--metric"):
        Fidelity(metric="hardest")


def test_default_space_solves_bifpn_repeats_too():
    """By default the solver also tries every BiFPN depth and keeps the fewest-MACs exact hit."""
    sampled = {k: v for k, v in OFFICIAL.items() if k != "bifpn_repeats"}
    trial = optuna.trial.FixedTrial(sampled)
    obj = BudgetObjective(default_space(), R.StudySpec(489_000, 0, (640, 640), ("macs",), None, {}))
    value = obj(trial)
    assert "bifpn_repeats" not in trial.params and trial.user_attrs[R.DELTA] == 0
    per_depth = []
    for reps in (1, 2, 3, 4):
        knobs = default_space().sample(optuna.trial.FixedTrial(sampled))
        sol = Solver(default_space(), 489_000, 0).solve({**knobs, "bifpn_repeats": reps})
        if sol is not None and sol.exact:
            per_depth.append(sol.macs)
    assert per_depth and value == min(per_depth)
