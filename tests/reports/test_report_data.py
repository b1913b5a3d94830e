"""Report data: loading featherface-tune studies, ranking, Pareto fronts, breakdowns, comparisons,
and the one-line errors for studies that cannot be reported."""

from __future__ import annotations


import optuna
import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.counter.analytic import GROUPS, count
from featherface_tune.errors import InputError
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset
from featherface_tune.reports import data
from report_study_factory import make_study, record

runner = CliRunner()


def _url(tmp_path, name="ff.db"):
    return f"sqlite:///{tmp_path / name}"


# ---- loading and ranking ---------------------------------------------------------------------------

def test_counts_and_top_follow_the_recorded_trials():
    study = make_study(None, n=16, failures=2)
    rep = data.build_report(study, "memory", top=5)
    trials = study.get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    feasible = [t for t in complete if t.user_attrs["feasible"]]
    assert 0 < len(feasible) < len(complete)  # the fixture has both kinds
    assert rep.counts == {"trials": 18, "complete": 16, "feasible": len(feasible),
                          "infeasible": 16 - len(feasible), "failed": 2, "pruned": 0, "running": 0}
    expect = sorted(feasible, key=lambda t: (t.values[0], abs(t.user_attrs["delta"]), t.number))[:5]
    assert list(rep.top["trial"]) == [t.number for t in expect]
    assert list(rep.top["params"]) == [t.user_attrs["params"] for t in expect]
    assert (rep.top["delta"].abs() <= 25_000).all()
    assert rep.pareto is None  # single objective
    assert rep.summary["best_trial"] == expect[0].number
    assert rep.failures.iloc[0]["trials"] == 2


def test_chosen_breakdown_is_the_counter_of_the_best_config():
    study = make_study(None, n=10)
    rep = data.build_report(study, "memory")
    best = study.trials[int(rep.top.iloc[0]["trial"])]
    cfg = FeatherFaceConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in best.user_attrs["config"].items()})
    expected = count(cfg, 640, 640, dcn_macs="full")
    assert rep.chosen.config == cfg
    frame = rep.chosen.frame
    assert list(frame["module"]) == [*GROUPS, "total"]
    assert frame.set_index("module").loc["total", "params"] == expected.params == best.user_attrs["params"]
    assert frame["params"][:-1].sum() == expected.params
    assert frame["macs"][:-1].sum() == expected.macs
    assert rep.warnings == ()


def test_trial_option_and_input_size_change_the_breakdown():
    study = make_study(None, n=6)
    rep = data.build_report(study, "memory", trial=4, input_size=(320, 320))
    assert rep.chosen.trial == 4
    assert rep.chosen.result.input_size == (320, 320)
    assert rep.chosen.result.params == study.trials[4].user_attrs["params"]
    with pytest.raises(InputError, match="no such trial"):
        data.build_report(study, "memory", trial=99)


def test_recount_mismatch_is_reported_as_a_warning():
    study = optuna.create_study()
    study.set_user_attr("featherface_tune", record(592_371, 1000, ["macs"]))
    r = count(FeatherFaceConfig(), dcn_macs="full")
    study.add_trial(optuna.trial.create_trial(value=float(r.macs), user_attrs={
        "config": FeatherFaceConfig().to_dict(), "params": r.params + 7, "macs": r.macs,
        "delta": 7, "feasible": True, "modules": {}}))
    rep = data.build_report(study, "memory")
    assert any("recorded 592,378 params" in w for w in rep.warnings)


def _dominates(a, b, dirs):
    better_or_equal = all((x <= y) if d == "minimize" else (x >= y) for x, y, d in zip(a, b, dirs))
    strictly = any((x < y) if d == "minimize" else (x > y) for x, y, d in zip(a, b, dirs))
    return better_or_equal and strictly


def test_pareto_front_of_a_two_objective_study():
    study = make_study(None, n=24, objectives=("macs", "proxy_ap"))
    rep = data.build_report(study, "memory")
    dirs = ["minimize", "maximize"]
    feasible = [t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs["feasible"]]
    front = set(rep.pareto["trial"])
    assert front and front <= {t.number for t in feasible}
    for t in feasible:
        dominated = any(_dominates(o.values, t.values, dirs) for o in feasible)
        assert (t.number in front) == (not dominated), t.number
    # Pareto members come first in the top table
    n = len(front)
    assert set(rep.top["trial"][:n]) == front and rep.top["pareto"][:n].all()


def test_pareto_front_matches_optuna_when_every_trial_is_feasible():
    study = make_study(None, n=20, objectives=("macs", "proxy_ap"), tolerance=10**6, failures=0)
    rep = data.build_report(study, "memory")
    assert set(rep.pareto["trial"]) == {t.number for t in study.best_trials}


# ---- comparisons ---------------------------------------------------------------------------------

def test_compare_official_with_489k_shows_where_the_params_went():
    cmp = data.compare(["featherface-official", "featherface-489k"])
    m = cmp.modules.set_index("module")
    assert m.loc["total", "featherface-official params"] == 592_371
    assert m.loc["total", "featherface-489k params"] == 489_000
    assert m.loc["total", "delta params"] == -103_371
    assert m["delta params"].drop("total").sum() == -103_371
    assert m["delta MACs"].drop("total").sum() == m.loc["total", "delta MACs"]
    assert m["share of delta params %"].drop("total").sum() == pytest.approx(100.0)
    official, small = count(get_preset("featherface-official")), count(get_preset("featherface-489k"))
    for g in GROUPS:
        assert m.loc[g, "delta params"] == small.modules[g].params - official.modules[g].params
    assert list(cmp.fields["field"]) == ["neck_channels", "neck_cbam_reduction", "ssh_channels"]
    assert cmp.fields.set_index("field").loc["ssh_channels", "featherface-489k"] == "[56, 72, 72]"


def test_compare_reads_config_files_and_input_size(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('preset = "featherface-489k"\nneck_channels = 40\n')
    cmp = data.compare(["featherface-489k", str(f)], input_size=(320, 480))
    assert [e.source for e in cmp.entries] == ["preset", "file"]
    assert cmp.entries[1].config.neck_channels == 40
    assert cmp.entries[1].result.input_size == (320, 480)
    assert list(cmp.fields["field"]) == ["neck_channels"]
    three = data.compare(["featherface-official", "featherface-489k", "retinaface-mnet025"])
    assert "delta params retinaface-mnet025" in three.modules.columns


@pytest.mark.parametrize("specs, message", [
    (["featherface-official"], "at least two"),
    (["featherface-official", "no-such-preset"], "unknown preset 'no-such-preset'"),
    (["featherface-official", "missing/config.toml"], "config file does not exist"),
])
def test_compare_errors(specs, message):
    with pytest.raises(Exception, match=message):
        data.compare(specs)


# ---- errors through the CLI ----------------------------------------------------------------------

def _fails(args, *needles):
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code != 0, result.output
    assert result.stdout == ""
    err = result.stderr.strip()
    assert "\n" not in err and err.startswith("error:"), err
    assert "Traceback" not in result.output
    for n in needles:
        assert n in err, err
    return err


def test_missing_storage_file(tmp_path):
    url = _url(tmp_path, "nothing.db")
    _fails(["--storage", url], f"--storage {url!r}: its file does not exist; run `featherface-tune search` "
           "first or give another --storage")
    assert not (tmp_path / "nothing.db").exists()  # the report must not create it


def test_default_storage_is_the_db_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails([], "featherface-tune.db", "does not exist")


def test_unknown_study_lists_the_available_ones(tmp_path):
    url = _url(tmp_path)
    make_study(url, name="alpha", n=2)
    make_study(url, name="beta", n=2)
    _fails(["--storage", url, "--study", "gamma"], "no study named 'gamma'", "alpha, beta")
    _fails(["--storage", url], "holds 2 studies", "--study", "alpha, beta")


def test_empty_study(tmp_path):
    url = _url(tmp_path)
    study = optuna.create_study(storage=url, study_name="empty")
    study.set_user_attr("featherface_tune", record(489_000, 100, ["macs"]))
    _fails(["--storage", url], "--study 'empty': is empty (no trials yet); run `featherface-tune search` with this "
                               "--study first")


def test_storage_with_no_studies(tmp_path):
    url = _url(tmp_path)
    optuna.create_study(storage=url, study_name="gone")
    optuna.delete_study(study_name="gone", storage=url)
    _fails(["--storage", url], "holds no studies")


def test_study_from_another_tool(tmp_path):
    url = _url(tmp_path)
    other = optuna.create_study(storage=url, study_name="theirs")
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    _fails(["--storage", url, "--study", "theirs"], "not a featherface-tune study", "another tool")


def test_record_from_a_newer_version(tmp_path):
    url = _url(tmp_path)
    s = make_study(url, name="future", n=2)
    s.set_user_attr("featherface_tune", {**record(489_000, 100, ["macs"]), "version": "2"})
    _fails(["--storage", url], "record version '2'")


def test_malformed_record():
    with pytest.raises(InputError, match="missing 'target'"):
        data.parse_record("x", {"featherface_tune": {"version": "1", "tolerance": 1}})
    with pytest.raises(InputError, match="input_size"):
        data.parse_record("x", {"featherface_tune": {**record(1, 1, ["macs"]), "input_size": [640]}})


def test_storage_file_that_is_not_a_database(tmp_path):
    f = tmp_path / "notes.db"
    f.write_text("hello")
    _fails(["--storage", f"sqlite:///{f}"], "not an SQLite database")
    assert f.read_text() == "hello"


def test_compare_errors_through_the_cli():
    _fails(["--compare", "featherface-official", "nope"], "unknown preset 'nope'")
    _fails(["featherface-official"], "unexpected argument", "--compare")
    _fails(["--compare", "featherface-official", "featherface-489k", "--format", "xml"], "--format 'xml'")


def test_password_is_redacted_in_messages():
    assert data.redact("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert data.redact("sqlite:///a.db") == "sqlite:///a.db"


# ---- the search's own conventions ------------------------------------------------------------------

def test_latency_objective_reads_the_latency_ms_attribute():
    """The search names the objective "latency" and stores "latency_ms" on feasible trials only;
    infeasible ones get an infinite objective value."""
    study = make_study(None, n=16, objectives=("macs", "latency"))
    rep = data.build_report(study, "memory")
    assert "latency_ms" in rep.top.columns and "value_latency" not in rep.top.columns
    assert rep.top["latency_ms"].notna().all()
    feasible = [t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs["feasible"]]
    front = {t.number for t in feasible
             if not any(_dominates(o.values, t.values, ["minimize", "minimize"]) for o in feasible)}
    assert set(rep.pareto["trial"]) == front


def test_repeated_configs_are_listed_once():
    study = make_study(None, n=12, repeat=12, failures=0)
    rep = data.build_report(study, "memory", top=50)
    assert rep.counts["complete"] == 24
    assert rep.top["trial"].max() < 12  # the earliest trial of each config
    assert len(rep.top) == rep.counts["feasible"] // 2


def test_report_reads_a_study_written_by_the_search(tmp_path):
    """Contract test with featherface_tune.tuner: a real (tiny) search, then its report."""
    from featherface_tune.tuner import records as R
    from featherface_tune.tuner import study as S
    from featherface_tune.tuner.objectives import BudgetObjective
    from featherface_tune.tuner.space import default_space

    url = _url(tmp_path)
    space = default_space()
    spec = R.StudySpec(target=489_000, tolerance=2_000, input_size=(640, 640), objectives=("macs",),
                       max_macs=None, space=space.to_dict())
    storage, _ = S.open_storage(url)
    st = S.open_study(storage, "real", spec, S.make_sampler(0))
    S.run(st, BudgetObjective(space, spec), 6, None)
    rep = data.load_report(url)
    assert rep.name == "real" and rep.counts["complete"] >= 6
    assert rep.warnings == ()
    ours = [int(t) for t in rep.ranked["trial"]]
    theirs = [r.number for r in S.ranked_feasible(S.trial_records(st), ("macs",))]
    assert ours == theirs
    assert rep.chosen.result.params == st.trials[ours[0]].user_attrs["params"]


def test_missing_journal_file_is_not_created(tmp_path):
    path = tmp_path / "search.log"
    _fails(["--storage", str(path)], "does not exist")
    _fails(["--storage", f"journal:{path}"], "does not exist")
    assert not path.exists()


def test_journal_storage(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "search.jsonl"
    make_study(JournalStorage(JournalFileBackend(str(path))), name="j", n=4)
    rep = data.load_report(str(path))
    assert rep.name == "j" and rep.counts["complete"] == 4


def test_no_feasible_trial_lists_the_closest_ones(tmp_path):
    url = _url(tmp_path)
    make_study(url, name="exact", n=6, tolerance=0)
    rep = data.load_report(url)
    assert rep.ranked.empty and rep.chosen is None
    assert any("no feasible trial" in w for w in rep.warnings)
    deltas = [abs(int(d)) for d in rep.closest["delta"]]
    assert deltas == sorted(deltas) and len(deltas) == 6
    result = runner.invoke(app, ["report", "--storage", url])
    assert result.exit_code == 0, result.output
    assert "Closest to the target" in result.stdout and "budget exactly 489,000 params" in result.stdout
    assert "warning: no feasible trial yet" in result.stderr
