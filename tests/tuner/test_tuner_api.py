"""`featherface_tune.search`: the Python API, the repair under MAC-blind objectives, witnesses first,
references for `closest`, and legacy (dense) studies."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.counter.analytic import count
from featherface_tune.counter.conventions import get_convention
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.models.presets import get_preset, preset_names
from featherface_tune.tuner import records as R
from featherface_tune.tuner.solve import prove
from featherface_tune.tuner.space import default_space

runner = CliRunner()
TARGET = 489_000
# the space file of docs/search.md
NARROW = ('neck = "bifpn"\nbifpn_repeats = [2, 3]\nneck_channels = { min = 40, max = 72 }\n'
          'ssh_channels = { min = 48, max = 96 }\nneck_cbam_reduction = [4, 8, 16]\n'
          'solve = ["ssh_channels_p5", "neck_cbam_reduction", "backbone_cbam_reduction"]\n')


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def exact():
    return prove(default_space(), TARGET, 0).exact


def test_lazy_export_and_result_object(exact):
    import featherface_tune

    from featherface_tune import search

    assert featherface_tune.search is search
    res = search(TARGET, objective="macs", top=5)
    assert isinstance(res.study, optuna.Study) and res.storage == "memory"
    assert res.solved == {**res.solved, "exact_configs": 4082, "optimal": True}
    assert res.certificate.in_window == 4082 and len(res.best) == 5 == len(res.study.trials)
    first = res.best[0]
    assert isinstance(first.config, FeatherFaceConfig) and first.params == TARGET
    assert first.macs == int(exact.macs.min()) == first.value == count(first.config, dcn_macs="full").macs
    assert [r.macs for r in res.best] == sorted(int(m) for m in exact.macs)[:5]
    assert any("optimal over all 4,082 exact configs" in n for n in res.notes)
    with pytest.raises(AttributeError):
        featherface_tune.no_such_thing  # noqa: B018


def test_a_mac_blind_objective_spans_the_p3_range(exact):
    from featherface_tune import search

    res = search(TARGET, objective=lambda cfg: 0.0, trials=40, seed=0)
    built = [r.config["ssh_channels"] for r in res.records if r.feasible and r.state == "COMPLETE"]
    p3 = [s[0] if isinstance(s, list) else s for s in built]
    assert len(p3) == 40  # every trial repaired into the window
    lo, hi = int(exact.budget[:, 0].min()), int(exact.budget[:, 0].max())
    assert (lo, hi) == (16, 128)
    assert min(p3) <= 32 and max(p3) >= 112, sorted(p3)  # not the fewest-MACs corner (P3 16..36)
    assert len(set(p3)) >= 10


def test_a_callable_rewarding_wide_p3_reaches_the_widest_exact_p3(exact):
    from featherface_tune import search

    def wide_p3(cfg: FeatherFaceConfig) -> float:
        return -float(cfg.ssh_widths[0])  # maximise P3: return the negative

    res = search(TARGET, objective=wide_p3, trials=60, seed=1)
    assert res.spec.objectives == ("wide_p3",)
    assert res.best[0].config.ssh_widths[0] == int(exact.budget[:, 0].max()) == 128
    assert res.best[0].value == -128.0


def test_callable_failures_are_recorded_and_the_search_goes_on():
    from featherface_tune import search

    calls = {"n": 0}

    def flaky(cfg: FeatherFaceConfig) -> float:
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            raise ValueError("flaky measurement")
        return float("nan") if calls["n"] % 3 == 2 else 1.0

    res = search(TARGET, objective=flaky, trials=4, seed=2)
    reasons = [r.fail_reason for r in res.records if r.state == "FAIL"]
    assert "ValueError: flaky measurement" in reasons and any("returned nan" in x for x in reasons)
    assert len(res.best) >= 1 and all(r.value == 1.0 for r in res.best)


def test_narrow_space_yields_exact_configs_in_few_trials(tmp_path: Path, cheap_latency: None):
    (tmp_path / "narrow.toml").write_text(NARROW)
    (tmp_path / "featherface-tune.db").write_bytes(b"")  # an existing, empty SQLite file
    res = runner.invoke(app, ["search", "--target", "489000", "--space", "narrow.toml", "--trials", "3",
                              "--objective", "latency", "--latency-mode", "sampled", "--runtime", "torch", "--input-size", "64", "64", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert 50 <= data["certificate"]["in_window"] <= 80
    assert data["feasible_trials"] == 3 and data["best"]  # the witness first, then repaired samples
    solved = json.loads(runner.invoke(app, ["search", "--target", "489000", "--space", "narrow.toml",
                                            "--json"]).stdout)
    assert solved["solved"]["exact_configs"] == data["certificate"]["in_window"]


def test_unknown_reference_is_one_line():
    res = runner.invoke(app, ["search", "--target", "489000", "--reference", "featherface-huge"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "featherface-huge" in lines[0]
    assert all(name in res.stderr for name in preset_names())


def test_reference_outside_the_space_still_works_and_says_why(tmp_path: Path):
    ref = tmp_path / "ref.toml"
    ref.write_text('preset = "featherface-official"\nneck_channels = 200\n')
    res = runner.invoke(app, ["search", "--target", "489000", "--reference", str(ref), "--json"])
    assert res.exit_code == 0, res.stderr
    notes = [ln for ln in res.stderr.splitlines() if "cannot express" in ln]
    assert len(notes) == 1 and "neck_channels=200" in notes[0]
    data = json.loads(res.stdout)
    assert data["reference"]["neck_channels"] == 200 and data["best"][0]["params"] == TARGET


def _legacy_study(url: str, name: str) -> None:
    """A study as the search wrote it before full compute: no dcn_macs, no reference, dense MACs."""
    study = optuna.create_study(storage=url, study_name=name)
    attr = {"version": "1", "target": TARGET, "tolerance": 0, "input_size": [640, 640], "objectives": ["macs"],
            "max_macs": None, "space": default_space().to_dict()}
    study.set_user_attr(R.STUDY_ATTR, attr)
    cfg = get_preset("featherface-489k")
    r = count(cfg, 640, 640, dcn_macs="dense")
    study.add_trial(optuna.trial.create_trial(value=float(r.macs), user_attrs={
        "config": cfg.to_dict(), "params": r.params, "macs": r.macs, "delta": 0, "feasible": True,
        "modules": {k: {"params": c.params, "macs": c.macs} for k, c in r.modules.items()},
        "solver": {"in_window": 1, "checked": 390224}}))


def test_an_old_dense_study_still_loads(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _legacy_study(url, "old")
    res = runner.invoke(app, ["report", "--storage", url, "--study", "old", "--json"])
    assert res.exit_code == 0, res.stderr
    assert "legacy study" in res.stderr and "dense" in res.stderr
    rep = json.loads(res.stdout)
    dense = count(get_preset("featherface-489k"), dcn_macs="dense")
    assert rep["record"]["dcn_macs"] == "dense" and rep["chosen"]["count"]["macs"] == dense.macs
    full = json.loads(runner.invoke(app, ["report", "--storage", url, "--study", "old", "--json",
                                          "--dcn-macs", "full"]).stdout)
    assert full["chosen"]["count"]["macs"] == count(get_preset("featherface-489k"), dcn_macs="full").macs
    # resuming it needs its convention; with it, the search says what the study is
    res = runner.invoke(app, ["search", "--target", "489000", "--objective", "macs", "--storage", url,
                              "--study", "old"])
    assert res.exit_code == 2 and "dcn_macs" in res.stderr and "--dcn-macs dense" in res.stderr
    res = runner.invoke(app, ["search", "--target", "489000", "--objective", "macs", "--storage", url,
                              "--study", "old", "--dcn-macs", "dense", "--json"])
    assert res.exit_code == 0, res.stderr
    assert "legacy study" in res.stderr
    data = json.loads(res.stdout)
    assert data["dcn_macs"] == "dense" and data["best"][0]["macs"] == int(
        prove(default_space(), TARGET, 0, counting=get_convention("numel", "dense")).exact.macs.min())


def test_a_list_of_objectives_gives_a_pareto_front():
    from featherface_tune import search

    def narrow_p3(cfg: FeatherFaceConfig) -> float:
        return float(cfg.ssh_widths[0])

    res = search(TARGET, objective=["macs", narrow_p3], trials=12, seed=3)
    assert res.spec.objectives == ("macs", "narrow_p3") and res.solved is None  # a callable: sampled
    front = [(r.macs, r.value[1]) for r in res.pareto]
    assert front and all(r.params == TARGET for r in res.pareto)
    for a in front:  # no member dominates another
        assert not any(b != a and b[0] <= a[0] and b[1] <= a[1] for b in front)


# ---- counting conventions reach the budget --------------------------------------------------------

def test_thop_convention_lands_on_the_papers_figure(tmp_path: Path):
    """`convention="thop"`: every best config counts exactly the target as thop would report it on the
    official code, while its true parameter count is larger (thop misses the DCN main convs and the
    BiFPN fusion weights); the study records the convention and the export names it."""
    from featherface_tune import search

    res = search(489_000, convention="thop")
    assert res.solved is not None and res.best
    assert res.spec.convention == "thop"
    for row in res.best:
        in_thop = count(row.config, 640, 640, convention="thop")
        assert (row.params, row.macs) == (in_thop.params, in_thop.macs) == (489_000, in_thop.macs)
        assert count(row.config, 640, 640).params > 489_000
        assert row.config.backbone_width == 0.25  # thop counts only what the official code can build
    out = tmp_path / "best.toml"
    r = runner.invoke(app, ["search", "--target", "489000", "--convention", "thop", "--storage",
                            f"sqlite:///{tmp_path / 's.db'}", "--export", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["convention"] == "thop" and data["best"][0]["params"] == 489_000
    assert "# convention: thop" in out.read_text()
    r = runner.invoke(app, ["count", "--config", str(out), "--convention", "thop", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["params"] == 489_000


def test_unknown_convention_is_one_line():
    r = runner.invoke(app, ["search", "--target", "489000", "--convention", "nope", "--storage", "sqlite:///:memory:"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "known conventions" in lines[0] and "thop" in lines[0]


def test_a_study_without_a_convention_reads_as_numel():
    spec = R.StudySpec.from_attr({"target": 1, "tolerance": 0, "input_size": [64, 64], "objectives": ["macs"]})
    assert spec.convention == "numel"
    assert R.StudySpec.from_attr({**spec.to_attr(), "convention": "thop", "dcn_macs": "full"}).convention == "thop"


# the official structure with its reduction fixed: a window of a few dozen exact configs, solved at once
SMALL = ["neck=bifpn", "bifpn_repeats=3", "neck_channels=42", "backbone_cbam=true", "neck_cbam=true",
         "ssh_deformable=true"]


def _timeless(doc):  # type: ignore[no-untyped-def]
    """The document without its timings (seconds differ from run to run)."""
    if isinstance(doc, dict):
        return {k: _timeless(v) for k, v in doc.items() if "seconds" not in k}
    if isinstance(doc, list):
        return [_timeless(v) for v in doc]
    return doc


@pytest.mark.parametrize("objective", [None, "macs,closest"])
def test_to_json_is_what_the_command_prints(tmp_path: Path, objective: str | None):
    """One document: `search(...).to_json(top)` (in memory) = `search --json` (an SQLite file), but the storage."""
    from featherface_tune import search
    from featherface_tune.tuner.space import build_space

    fixes = [a for fix in SMALL for a in ("--fix", fix)]
    args = ["search", "--target", str(TARGET), "--tolerance", "400", "--top", "3", *fixes, "--json"]
    res = runner.invoke(app, args + (["--objective", objective] if objective else []), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    api = search(TARGET, space=build_space(None, SMALL), tolerance=400, top=3, objective=objective).to_json(3)
    assert list(api) == list(printed)  # the same keys in the same order
    assert api["storage"] == "memory" and printed["storage"].endswith("(sqlite)")
    api.pop("storage"), printed.pop("storage")
    assert _timeless(api) == _timeless(printed)
    assert ("pareto" in api) == (objective is not None) and len(api["best"]) == 3


@pytest.mark.parametrize("kwargs,message", [
    ({"seed": -1}, "seed=-1: must be an integer in 0..4294967295"),
    ({"seed": 2**70}, "seed="),
    ({"target": 0}, "target=0: must be a positive parameter count"),
    ({"study": ""}, "study='': give a name of 1 to 512 characters"),
    ({"storage": " "}, "storage=' ': give a storage URL"),
    ({"storage": "sqlite:////no/such/dir/x.db"}, "storage='sqlite:////no/such/dir/x.db': folder '/no/such/dir' does not"),
    ({"fidelity": object()}, "proxy training options need proxy_data"),
    ({"objective": "latency", "input_size": (10_000, 10_000)}, "input_size=(10000, 10000): with objective latency: 10000x10000"),
    ({"objective": "latency", "latency_mode": "fast"}, "latency_mode='fast': use model or sampled"),
    ({"objective": "latency", "finalists": 0}, "finalists=0: must be at least 1"),
    ({"objective": "latency", "latency_runtime": "tvm"}, "latency_runtime='tvm': use"),
    ({"objective": "latency", "latency_threads": 0}, "latency_threads=0: must be at least 1"),
    ({"reference": "no-such-preset"}, "reference='no-such-preset'"),
    ({"dcn_macs": "half"}, "dcn_macs='half': must be one of dense, full"),
    ({"pruner": "asha"}, "pruner='asha': must be one of median, hyperband, none"),
])
def test_check_arguments_is_the_one_place_search_is_checked(kwargs: dict, message: str):  # type: ignore[type-arg]
    """The API and the command refuse the same arguments with the same rule (the command names flags)."""
    from featherface_tune import search
    from featherface_tune.errors import FeatherFaceError

    with pytest.raises(FeatherFaceError) as caught:  # InputError; ConfigError for the counting pair
        search(**{"target": TARGET, **kwargs})
    assert message in str(caught.value) and "--" not in str(caught.value)


@pytest.mark.parametrize("args,message", [
    (["--seed", "-1"], "error: --seed -1: must be an integer in 0..4294967295"),
    (["--study", ""], "error: --study '': give a name of 1 to 512 characters"),
    (["--storage", ""], "error: --storage '': give a storage URL"),
    (["--objective", "latency", "--input-size", "10000", "10000"],
     "error: --input-size 10000 10000: with --objective latency: 10000x10000"),
    (["--objective", "latency", "--latency-mode", "fast"], "error: --latency-mode 'fast': use model or sampled"),
    (["--objective", "latency", "--finalists", "0"], "error: --finalists 0: must be at least 1"),
    (["--objective", "latency", "--runtime", "tvm"], "error: --runtime 'tvm': use"),
    (["--proxy-subset", "0.5"], "error: --proxy-subset 0.5: proxy training options need --proxy-data"),
    (["--input-size", "0", "0"], "error: --input-size 0 0: height and width must be in 1..65,536"),
    (["--reference", "no-such-preset"], "error: --reference 'no-such-preset'"),
])
def test_the_command_names_the_flags_of_the_api_checks(args: list[str], message: str):
    res = runner.invoke(app, ["search", "--target", str(TARGET), *args])
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_nearest_target_is_the_trials_nearest_the_parameter_target():
    from featherface_tune.tuner.ranking import nearest_target

    def rec(n: int, delta: int | None, macs: int, state: str = "COMPLETE") -> R.TrialRecord:
        return R.TrialRecord(number=n, state=state, config={"neck_channels": n}, params=None if delta is None
                             else TARGET + delta, macs=macs, delta=delta, feasible=False, values=None)

    recs = [rec(0, 900, 5), rec(1, -300, 9), rec(2, 300, 4), rec(3, 10, 1, "FAIL"), rec(4, None, 1)]
    assert [r.number for r in nearest_target(recs, 2)] == [2, 1]  # |delta| first, then fewer MACs
