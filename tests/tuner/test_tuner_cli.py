"""`featherface-tune search` end to end (CliRunner, embedded SQLite store in a temp folder)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.counter.analytic import count_params
from featherface_tune.models.presets import resolve_config
from featherface_tune.tuner import records as R
from featherface_tune.tuner.solve import MAX_EXACT

runner = CliRunner()
# the official structure: every trial lands exactly on 489,000 (for tests that are not about finding hits)
SURE = ["--fix", "neck=bifpn", "--fix", "bifpn_repeats=3", "--fix", "neck_channels=42", "--fix", "backbone_cbam=true",
        "--fix", "neck_cbam=true", "--fix", "ssh_deformable=true"]
# a sampled (measured) objective, measured by a cheap stand-in (the `cheap_latency` fixture, used by every
# test here): for tests about trials, storage and resuming; the measurement is tested in tests/deploy
SAMPLED = ["--objective", "latency", "--latency-mode", "sampled", "--runtime", "torch", "--input-size", "64", "64", *SURE]
FEATHERFACE = {"neck": "bifpn", "backbone_cbam": True, "neck_cbam": True, "ssh_deformable": True, "shuffle": "block"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cheap_latency: None) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _search(*args: str):
    return runner.invoke(app, ["search", *args], catch_exceptions=False)


def _json(res) -> dict:
    assert res.exit_code == 0, res.output + (res.stderr or "")
    return json.loads(res.stdout)


def test_default_search_solves_closest_and_exports(tmp_path: Path):
    res = _search("--target", "489000", "--trials", "40", "--json", "--export", "best.toml")
    data = _json(res)
    assert data["certificate"]["in_window"] == 4082 and data["objectives"] == ["closest"]
    assert data["dcn_macs"] == "full" and data["reference"] == resolve_config("featherface-official").to_dict()
    assert data["solved"]["optimal"] and data["solved"]["exact_configs"] == 4082
    assert "optimal over all 4,082 exact configs" in res.stderr
    assert len(data["worker"]["trials"]) == 10  # the top 10 optima, whatever --trials is
    for row in data["best"]:
        assert row["params"] == 489_000 and row["delta"] == 0 and row["feasible"]
    dist = [r["closest"] for r in data["best"]]
    assert dist == sorted(dist)
    best = data["best"][0]["config"]
    assert {k: best[k] for k in FEATHERFACE} == FEATHERFACE  # FeatherFace's structure, widths adjusted
    assert (tmp_path / "featherface-tune.db").is_file()  # embedded store in the working folder
    cfg = resolve_config(config_file=tmp_path / "best.toml")
    assert count_params(cfg) == 489_000 and count_params(cfg) == data["best"][0]["params"]
    res = runner.invoke(app, ["count", "--config", "best.toml", "--json"])
    assert json.loads(res.stdout)["params"] == 489_000
    again = _json(_search("--target", "489000", "--json"))  # a rerun records nothing new
    assert again["worker"]["trials"] == [] and again["best"] == data["best"]


def test_study_record_format(tmp_path: Path):
    data = _json(_search("--target", "489000", "--trials", "6", "--seed", "2", "--json", "--study", "fmt", *SAMPLED))
    study = optuna.load_study(study_name="fmt", storage=f"sqlite:///{tmp_path / 'featherface-tune.db'}")
    attr = study.user_attrs[R.STUDY_ATTR]
    assert tuple(attr) == R.STUDY_KEYS
    assert attr["version"] == "1" and attr["target"] == 489_000 and attr["tolerance"] == 0
    assert attr["input_size"] == [64, 64] and attr["objectives"] == ["latency"] and attr["max_macs"] is None
    assert attr["dcn_macs"] == "full" and attr["reference"] is None
    assert isinstance(attr["space"], dict) and "neck_channels" in attr["space"]
    assert study.metric_names == ["latency"]
    assert len(study.trials) == 6 == len(data["worker"]["trials"])
    assert study.trials[0].user_attrs[R.ENQUEUED]["why"] == "witness"  # the certificate's witness first
    for t in study.trials:
        a = t.user_attrs
        for key in (R.CONFIG, R.PARAMS, R.MACS, R.DELTA, R.FEASIBLE, R.MODULES, R.SAMPLED, R.SOLVER):
            assert key in a
        assert a[R.DELTA] == a[R.PARAMS] - 489_000
        assert a[R.FEASIBLE] == (a[R.DELTA] == 0)
        assert count_params(resolve_config(overrides=a[R.CONFIG])) == a[R.PARAMS]


def test_resume_continues_the_same_study(tmp_path: Path):
    first = _json(_search("--target", "489000", "--trials", "6", "--seed", "3", "--json", *SAMPLED))
    second = _json(_search("--target", "489000", "--trials", "10", "--seed", "4", "--json", *SAMPLED))
    assert first["study"] == second["study"]
    assert len(first["worker"]["trials"]) == 6 and len(second["worker"]["trials"]) == 4
    assert second["study_trials"] == 10
    assert set(first["worker"]["trials"]).isdisjoint(second["worker"]["trials"])
    again = _json(_search("--target", "489000", "--trials", "10", "--json", *SAMPLED))
    assert again["worker"]["trials"] == [] and again["study_trials"] == 10


def _interrupt_trial(monkeypatch: pytest.MonkeyPatch, n: int):
    """Ctrl-C in the n-th trial evaluated; returns the real evaluation, to put back."""
    from featherface_tune.tuner import objectives

    real = objectives.BudgetObjective._evaluate
    calls = {"n": 0}

    def flaky(self, trial):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self, trial)

    monkeypatch.setattr(objectives.BudgetObjective, "_evaluate", flaky)
    return real


def test_interrupt_loses_at_most_the_trial_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from featherface_tune.tuner import objectives

    real = _interrupt_trial(monkeypatch, 6)
    res = runner.invoke(app, ["search", "--target", "489000", "--trials", "10", "--seed", "5", "--study", "ctrl-c", *SAMPLED])
    assert res.exit_code == 130 and "rerun the same command" in res.stderr and "Traceback" not in res.stderr
    monkeypatch.setattr(objectives.BudgetObjective, "_evaluate", real)
    study = optuna.load_study(study_name="ctrl-c", storage=f"sqlite:///{tmp_path / 'featherface-tune.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 5 + ["FAIL"]
    assert study.trials[-1].user_attrs[R.FAIL_REASON] == "interrupted"
    data = _json(_search("--target", "489000", "--trials", "10", "--study", "ctrl-c", "--json", *SAMPLED))
    assert len(data["worker"]["trials"]) == 5
    study = optuna.load_study(study_name="ctrl-c", storage=f"sqlite:///{tmp_path / 'featherface-tune.db'}")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 10


def test_interrupted_solved_search_finishes_on_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from featherface_tune.tuner import objectives

    real = _interrupt_trial(monkeypatch, 4)
    res = runner.invoke(app, ["search", "--target", "489000", "--objective", "macs", "--study", "s"])
    assert res.exit_code == 130
    monkeypatch.setattr(objectives.BudgetObjective, "_evaluate", real)
    data = _json(_search("--target", "489000", "--objective", "macs", "--study", "s", "--json"))
    assert len(data["worker"]["trials"]) == 7 and data["feasible_configs"] == 10
    macs = [r["macs"] for r in data["best"]]
    assert macs == sorted(macs)


def test_journal_storage(tmp_path: Path):
    data = _json(_search("--target", "489000", "--trials", "4", "--seed", "6", "--json", "--storage", "journal:s.log", *SAMPLED))
    assert (tmp_path / "s.log").is_file() and len(data["worker"]["trials"]) == 4


def test_other_search_under_the_same_study_name_is_refused():
    _json(_search("--target", "489000", "--trials", "3", "--study", "x", "--json", *SAMPLED))
    res = runner.invoke(app, ["search", "--target", "490000", "--trials", "3", "--study", "x"])
    assert res.exit_code == 2 and "made for another search" in res.stderr


def test_unreachable_window_reports_the_nearest_counts(tmp_path: Path):
    import itertools

    from featherface_tune.models.config import FeatherFaceConfig

    space = tmp_path / "narrow.toml"
    space.write_text('neck = "bifpn"\nbifpn_repeats = 2\nneck_channels = 40\nbackbone_cbam = true\n'
                     'neck_cbam = true\nssh_deformable = true\nshuffle = "block"\n'
                     'ssh_channels = [48, 56]\nbackbone_cbam_reduction = 16\nneck_cbam_reduction = 16\n')
    counts = sorted({count_params(FeatherFaceConfig(neck_channels=40, bifpn_repeats=2, ssh_channels=s))
                     for s in itertools.product((48, 56), repeat=3)})
    gap, a, b = max((b - a, a, b) for a, b in zip(counts, counts[1:]))
    target = a + gap // 2
    res = runner.invoke(app, ["search", "--target", str(target), "--space", str(space), "--json"])
    assert res.exit_code == 1
    assert "nearest achievable" in res.stderr and "proof: exhaustive count" in res.stderr
    assert f"{a:,}" in res.stderr and f"{b:,}" in res.stderr
    data = json.loads(res.stdout)
    assert data["status"] == "unreachable" and data["certificate"]["in_window"] == 0
    cert = data["certificate"]
    assert cert["nearest_below"]["params"] == a and cert["nearest_above"]["params"] == b
    for w in (cert["nearest_below"], cert["nearest_above"]):
        assert count_params(resolve_config(overrides=w["config"])) == w["params"]
    assert cert["configs"] == 8
    # the reported tolerance makes it reachable
    need = min(target - a, b - target)
    res = runner.invoke(app, ["search", "--target", str(target), "--space", str(space), "--tolerance", str(need),
                              "--trials", "3", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["best"]


def test_a_max_macs_nothing_meets_is_not_called_an_empty_window():
    res = runner.invoke(app, ["search", "--target", "489000", "--max-macs", "1000", "--storage", "sqlite:///:memory:",
                              "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["status"] == "over_max_macs" and data["max_macs"] == 1000
    assert data["certificate"]["in_window"] == 4082
    assert "has MACs <= 1,000" in res.stderr and "nearest achievable" not in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--target", "0"], "error: --target 0: must be a positive parameter count"),  # the library's field, as a flag
    (["--target", "-5"], "must be a positive parameter count"),
    (["--target", "1000"], "smallest config in this space has"),
    (["--target", "99000000"], "largest config in this space has"),
    (["--target", "489000", "--tolerance", "abc"], "--tolerance 'abc'"),
    (["--target", "489000", "--storage", "foo://bar"], "not a storage URL"),
    (["--target", "489000", "--storage", "sqlite:////no/such/dir/x.db"], "does not exist"),
    (["--target", "489000", "--storage", "postgresql://u:secret@127.0.0.1:1/db"], "cannot open the database"),
    (["--target", "489000", "--storage", "postgres://u:secret@127.0.0.1:1/db"], "postgresql+"),
    (["--target", "489000", "--fix", "bogus=1"], "unknown field"),
    (["--target", "489000", "--fix", "ssh_channels=50"], "multiple of 4"),
    (["--target", "489000", "--fix", "backbone_cbam_reduction=128"], "64//128 = 0 hidden units"),
    (["--target", "489000", "--fix", "neck_channels=16", "--fix", "neck_cbam=true", "--fix", "neck_cbam_reduction=32"],
     "holds no valid config"),
    (["--target", "489000", "--fix", "neck_channels=20", "--fix", "neck_cbam_reduction=32"],
     "neck_cbam_reduction=32 breaks a rule in every config"),
    (["--target", "489000", "--space", "missing.toml"], "does not exist"),
    (["--target", "489000", "--objective", "speed"], "unknown objective"),
    (["--target", "489000", "--trials", "0"], "error: --trials 0: must be at least 1"),
    (["--target", "489000", "--proxy-data", ".", "--proxy-image-size", "100"],  # a training rule, as the search's flag
     "error: --proxy-image-size 100: must be a positive multiple of 32"),
    (["--target", "489000", "--proxy-epochs", "3"], "need --proxy-data"),
    (["--target", "489000", "--proxy-data", "nodir"], "not a directory"),
])
def test_bad_input_is_one_line(args, message):
    res = runner.invoke(app, ["search", *args])
    assert res.exit_code != 0
    assert message in res.stderr
    assert "Traceback" not in res.output and "Traceback" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("error:")]) == 1
    assert "secret" not in res.stderr


def test_malformed_space_file(tmp_path: Path):
    (tmp_path / "bad.toml").write_text("neck_channels = { min = 60, max = 50 }\n")
    res = runner.invoke(app, ["search", "--target", "489000", "--space", "bad.toml"])
    assert res.exit_code == 2 and "empty range" in res.stderr and "Traceback" not in res.output
    (tmp_path / "bad2.toml").write_text("neck_channels = [\n")
    res = runner.invoke(app, ["search", "--target", "489000", "--space", "bad2.toml"])
    assert res.exit_code == 2 and "not valid TOML" in res.stderr


@pytest.mark.slow  # solves closest over 1.5 million configs, structure by structure (about 2 s idle)
def test_tolerance_percent_and_max_macs():
    # two knobs fixed: 1.5 million configs in the window, still too many to list, solved structure by
    # structure in a third of the time the whole space's 4.1 million take
    res = _search("--target", "489000", "--tolerance", "0.1%", "--max-macs", "900000000", "--fix", "neck=bifpn",
                  "--fix", "ssh_deformable=true", "--trials", "25", "--seed", "7", "--json")
    data = _json(res)
    assert "structure by structure" in res.stderr
    assert data["certificate"]["in_window"] == 1_463_986 > MAX_EXACT
    assert data["solved"]["optimal"] and data["solved"]["method"] == "by structure"
    assert data["solved"]["exact_configs"] < 1_463_986  # those under --max-macs
    assert data["tolerance"] == 489
    assert data["best"]
    for row in data["best"]:
        assert abs(row["delta"]) <= 489 and row["macs"] <= 900_000_000
        assert row["config"]["neck"] == "bifpn" and row["config"]["ssh_deformable"]


def test_timeout_stops_the_worker():
    t0 = __import__("time").perf_counter()
    data = _json(_search("--target", "489000", "--trials", "100000", "--timeout", "1", "--seed", "8", "--json", *SAMPLED))
    assert 0 < len(data["worker"]["trials"]) < 100000
    assert __import__("time").perf_counter() - t0 < 30


def test_two_objectives_give_a_pareto_front():
    data = _json(_search("--target", "489000", "--objective", "macs,latency", "--latency-mode", "sampled", "--runtime", "torch", "--input-size", "64", "64",
                         "--trials", "4", "--seed", "9", "--json", *SURE))
    assert data["objectives"] == ["macs", "latency"]
    assert data["pareto"] and all(r["latency_ms"] > 0 and r["delta"] == 0 for r in data["pareto"])
    macs = [r["macs"] for r in data["pareto"]]
    lat = [r["latency_ms"] for r in data["pareto"]]
    for i in range(len(macs)):  # no member of the front dominates another
        for j in range(len(macs)):
            assert i == j or not (macs[j] <= macs[i] and lat[j] <= lat[i] and (macs[j], lat[j]) != (macs[i], lat[i]))


def test_search_and_report_share_the_default_storage():
    """One --storage option: the same help and no default of its own (both open default_storage_url)."""
    import typer.main

    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    options = {name: next(p for p in group.get_command(ctx, name).params if p.name == "storage")
               for name in ("search", "report")}
    assert options["search"].help == options["report"].help and "./featherface-tune.db" in options["search"].help
    assert options["search"].default is None and options["report"].default is None
