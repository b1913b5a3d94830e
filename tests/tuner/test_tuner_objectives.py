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
from featherface_tune.counter.analytic import count
from featherface_tune.counter.conventions import TRUE
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset
from featherface_tune.tuner.solve import Repairer, prove
from featherface_tune.tuner.space import default_space, distance, knobs_from_config


def _space():
    return default_space()


# the 489k preset, every knob given (Optuna samples them all)
OFFICIAL = {"backbone_cbam": True, "neck": "bifpn", "bifpn_repeats": 3, "neck_channels": 42,
            "neck_cbam": True, "ssh_deformable": True, "shuffle": "block", "ssh_channels_p3": 56,
            "ssh_channels_p4": 72, "ssh_channels_p5": 72, "backbone_cbam_reduction": 16, "neck_cbam_reduction": 8}
FAR = {**OFFICIAL, "neck_channels": 128, "bifpn_repeats": 4, "ssh_channels_p3": 128}


def _spec(objectives=("macs",), tolerance=0, max_macs=None, size=(640, 640), reference=None):
    return R.StudySpec(489_000, tolerance, size, tuple(objectives), max_macs, _space().to_dict(), counting=TRUE,
                       reference=reference)


@pytest.fixture(scope="module")
def repairer():
    proof = prove(_space(), 489_000, 0)
    return Repairer(_space(), 489_000, 0, exact=proof.exact, structures=proof.hit_structures)


def _objective(repairer, spec=None, **kw):
    return BudgetObjective(_space(), spec or _spec(), repairer=repairer, **kw)


def test_exact_trial_records_everything(repairer):
    trial = optuna.trial.FixedTrial(OFFICIAL)
    value = _objective(repairer)(trial)
    a = trial.user_attrs
    assert a[R.PARAMS] == 489_000 and a[R.DELTA] == 0 and a[R.FEASIBLE] is True
    assert value == float(a[R.MACS])
    cfg = FeatherFaceConfig(**a[R.CONFIG])
    assert a[R.MACS] == count(cfg, 640, 640, dcn_macs="full").macs > count(cfg, 640, 640, dcn_macs="dense").macs
    assert sum(m["params"] for m in a[R.MODULES].values()) == a[R.PARAMS]
    assert sum(m["macs"] for m in a[R.MODULES].values()) == a[R.MACS]
    assert a[R.CONFIG]["ssh_channels"] == [56, 72, 72] and a[R.CONFIG]["neck_cbam_reduction"] == 8
    assert a[R.SAMPLED] == OFFICIAL and a[R.SOLVER]["distance"] == 0.0
    assert trial.constraints == {"params": 0.0}
    assert set(R.TRIAL_KEYS) - set(a) == {R.LATENCY_MS, *R.LATENCY_DETAIL, R.PROXY_AP, R.FAIL_REASON}


def test_a_far_sample_is_repaired_into_the_window(repairer):
    trial = optuna.trial.FixedTrial(FAR)
    _objective(repairer)(trial)
    a = trial.user_attrs
    assert a[R.FEASIBLE] is True and a[R.DELTA] == 0 and trial.constraints["params"] == 0
    assert a[R.SAMPLED] == FAR and a[R.SOLVER]["distance"] > 0 and a[R.SOLVER]["switches"] == 0
    built = a[R.CONFIG]
    assert built["neck"] == "bifpn" and built["ssh_deformable"] and built["shuffle"] == "block"


def test_max_macs_beyond_every_exact_config_fails_the_trial():
    spec = _spec(max_macs=1000)
    proof = prove(_space(), 489_000, 0, max_macs=1000)
    assert len(proof.exact) == 0 and proof.least_macs > 1000
    obj = BudgetObjective(_space(), spec, repairer=Repairer(_space(), 489_000, 0, max_macs=1000, exact=proof.exact))
    trial = optuna.trial.FixedTrial(OFFICIAL)
    with pytest.raises(TrialFailed, match="no config"):
        obj(trial)


def test_closest_objective_records_the_distance(repairer):
    ref = get_preset("featherface-official")
    trial = optuna.trial.FixedTrial(OFFICIAL)
    value = _objective(repairer, _spec(("closest",), reference=ref.to_dict()))(trial)
    assert value == trial.user_attrs[R.CLOSEST] == pytest.approx(
        distance(knobs_from_config(get_preset("featherface-489k")), knobs_from_config(ref)))


def test_latency_objective_is_measured_on_feasible_configs_only(cheap_latency):
    spec = _spec(("macs", "latency"), size=(64, 64))
    trial = optuna.trial.FixedTrial(OFFICIAL)
    values = BudgetObjective(_space(), spec)(trial)
    assert values[0] == trial.user_attrs[R.MACS]
    assert values[1] == trial.user_attrs[R.LATENCY_MS] > 0


def test_callables_raising_or_returning_nan_fail_the_trial_with_a_reason(repairer):
    def boom(cfg):
        raise RuntimeError("no GPU today")

    for fn, reason in ((boom, "RuntimeError: no GPU today"), (lambda cfg: math.nan, "returned nan"),
                       (lambda cfg: "fast", "returned 'fast'")):
        obj = _objective(repairer, _spec(("mine",)), callables={"mine": fn})
        trial = optuna.trial.FixedTrial(OFFICIAL)
        with pytest.raises(TrialFailed):
            obj(trial)
        assert reason in trial.user_attrs[R.FAIL_REASON]
    obj = _objective(repairer, _spec(("mine",)), callables={"mine": lambda cfg: -min(cfg.ssh_widths)})
    trial = optuna.trial.FixedTrial(OFFICIAL)
    assert obj(trial) == -56.0 and trial.user_attrs[R.CALLABLES] == {"mine": -56.0}


def test_proxy_objective_hook(monkeypatch, tmp_path: Path, repairer):
    calls = []

    def fake(cfg, data_dir, fidelity, trial):
        calls.append((cfg.neck_channels, data_dir, dict(fidelity), trial))
        return 0.5

    mod = types.ModuleType("featherface_tune.training.proxy")
    mod.proxy_objective = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "featherface_tune.training.proxy", mod)
    fn = load_proxy(tmp_path)
    fid = Fidelity(epochs=2, subset=0.1, metric="hard")
    obj = BudgetObjective(_space(), _spec(("proxy_ap",)), fn, tmp_path, fid, repairer=repairer)
    trial = optuna.trial.FixedTrial(OFFICIAL)
    assert obj(trial) == 0.5 and trial.user_attrs[R.PROXY_AP] == 0.5
    assert calls == [(42, tmp_path, {"epochs": 2, "subset": 0.1, "metric": "hard"}, None)]
    # the same config again: trained once
    assert obj(optuna.trial.FixedTrial(OFFICIAL)) == 0.5 and len(calls) == 1


def test_proxy_failure_is_recorded(monkeypatch, tmp_path: Path, repairer):
    def boom(cfg, data_dir, fidelity, trial):
        raise RuntimeError("loss is NaN")

    obj = BudgetObjective(_space(), _spec(("proxy_ap",)), boom, tmp_path, Fidelity(), repairer=repairer)
    trial = optuna.trial.FixedTrial(OFFICIAL)
    with pytest.raises(TrialFailed):
        obj(trial)
    assert trial.user_attrs[R.FAIL_REASON] == "RuntimeError: loss is NaN"


def test_bad_proxy_data_stops_the_search(tmp_path: Path, repairer):
    def no_data(cfg, data_dir, fidelity, trial):
        raise InputError(f"no WIDERFace train annotations under {data_dir}")

    obj = BudgetObjective(_space(), _spec(("proxy_ap",)), no_data, tmp_path, Fidelity(), repairer=repairer)
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
    assert parse_objectives(None, False) == ("closest",)
    assert parse_objectives("macs", False) == ("macs",)
    assert parse_objectives(None, True) == ("proxy_ap",)
    assert parse_objectives("macs,latency", False) == ("macs", "latency")
    assert parse_objectives("latency", True) == ("latency", "proxy_ap")
    with pytest.raises(InputError, match="^objective='speed': unknown objective; use closest, macs") as bad:
        parse_objectives("speed", False)
    assert bad.value.shown_as(lambda f: "--" + f.replace("_", "-")).startswith("--objective 'speed': unknown")
    with pytest.raises(InputError, match="^objective='proxy': needs proxy_data DIR$") as info:
        parse_objectives("proxy", False)
    assert info.value.shown_as(lambda f: "--" + f.replace("_", "-")) == "--objective 'proxy': needs --proxy-data DIR"
    with pytest.raises(InputError, match="^metric='hardest': must be one of") as info:
        Fidelity(metric="hardest")
    assert (info.value.field, info.value.value) == ("metric", "hardest")


def test_bifpn_repeats_is_sampled_and_kept_when_the_budget_allows(repairer):
    """Every knob is sampled: a sampled BiFPN depth survives the repair when the sample is exact, and a
    far sample keeps the depth unless another is nearer under the distance."""
    ex = repairer.exact
    for reps in (1, 2, 3, 4):
        i = next(i for i in range(len(ex)) if ex.knobs(i)["bifpn_repeats"] == reps)
        knobs = ex.knobs(i)
        trial = optuna.trial.FixedTrial({k: knobs[k] for k in default_space().sampled if k in knobs})
        _objective(repairer)(trial)
        assert "bifpn_repeats" in trial.params and trial.user_attrs[R.DELTA] == 0
        assert trial.user_attrs[R.CONFIG] == ex.config(i).to_dict()
        assert trial.user_attrs[R.SOLVER]["distance"] == 0.0


def test_one_fidelity_for_search_and_proxy():
    """tuner.objectives.Fidelity is the proxy's Fidelity; its training defaults are TrainOptions'
    where it does not set its own, and to_dict() is the shape the search hands to the proxy."""
    from featherface_tune.training.loop import TrainOptions
    from featherface_tune.training.proxy import Fidelity as ProxyFidelity

    assert Fidelity is ProxyFidelity
    assert Fidelity().to_dict() == {"metric": "hard"}
    fid = Fidelity.from_search_options(2, 0.1, None, None, "easy")
    assert fid.to_dict() == {"epochs": 2, "subset": 0.1, "metric": "easy"}
    assert Fidelity.from_mapping(fid.to_dict()) == fid
    opts, base = Fidelity().train_options(), TrainOptions()
    for name in ("subset", "time_budget", "seed", "batch_size", "optimizer", "weight_decay", "momentum",
                 "warmup_epochs", "min_lr_ratio", "augment"):
        assert getattr(opts, name) == getattr(base, name), name
    assert (opts.epochs, opts.image_size, opts.lr, opts.cache_images) == (5, 320, 3e-3, True)
    # errors name the search's arguments (the command layer shows them as --proxy-* flags)
    for kwargs, message in (({"epochs": 0}, "proxy_epochs=0"), ({"image_size": 0}, "proxy_image_size=0"),
                            ({"subset": 0.0}, "proxy_subset="), ({"time_budget": -1.0}, "proxy_time_budget=")):
        with pytest.raises(InputError, match=message):
            Fidelity.from_search_options(**kwargs)
    with pytest.raises(InputError, match="^proxy_image_size=100: must be a positive multiple of 32$") as info:
        Fidelity.from_search_options(image_size=100)  # the training rules apply up front, about the search's argument
    assert info.value.shown_as("--proxy-image-size") == "--proxy-image-size 100: must be a positive multiple of 32"


def test_latency_time_cap_from_the_environment(monkeypatch):
    from featherface_tune.errors import InputError
    from featherface_tune.tuner.objectives import latency_time_cap

    monkeypatch.delenv("FEATHERFACE_TUNE_LATENCY_SECONDS", raising=False)
    assert latency_time_cap() == 30.0
    monkeypatch.setenv("FEATHERFACE_TUNE_LATENCY_SECONDS", "2.5")
    assert latency_time_cap() == 2.5
    for bad in ("0", "-1", "nan", "1e9", "soon"):
        monkeypatch.setenv("FEATHERFACE_TUNE_LATENCY_SECONDS", bad)
        with pytest.raises(InputError, match="FEATHERFACE_TUNE_LATENCY_SECONDS"):
            latency_time_cap()
