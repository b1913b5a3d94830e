"""Property test: whatever strings and numbers reach --set, --fix, --study, --target and --tolerance,
and the options of calibrate, export and report, the command ends within seconds with exit 0, 1 or 2,
never a traceback, and a bad input costs at most three lines on stderr; whatever the Python API's
`search` and `count` are given, they return or raise the project's errors (FeatherFaceError)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import NARROW_SPACE
from featherface_tune.cli import app
from featherface_tune.models.config import FIELD_NAMES

runner = CliRunner()

numbers = st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True, allow_infinity=True))
values = st.one_of(st.text(max_size=30), numbers.map(str), st.sampled_from(["[", "[]", "[1,2,3]", "true", "{}", "1e308",
                                                                             "[/x]", "[bold]", "%", "nan", "inf"]))
assignments = st.one_of(st.text(max_size=40),
                        st.tuples(st.sampled_from(FIELD_NAMES + ("bogus", "")), values).map(lambda kv: f"{kv[0]}={kv[1]}"))


def _check(args: list[str], limit: float = 15, lines: int = 3) -> None:
    t0 = time.perf_counter()
    r = runner.invoke(app, args)
    seconds = time.perf_counter() - t0
    assert r.exit_code in (0, 1, 2), (args, r.exit_code, repr(r.exception), r.output[-1000:])
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
    assert "Traceback" not in r.output and "Traceback" not in r.stderr, args
    if r.exit_code == 2:
        assert len(r.stderr.strip().splitlines()) <= lines, (args, r.stderr)
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1, (args, r.stderr)
    assert seconds < limit, (args, seconds)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(assignments, min_size=1, max_size=3))
def test_count_set_never_crashes(sets: list[str]):
    args = ["count"]
    for s in sets:
        args += ["--set", s]
    _check(args)


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prop")
    (d / "narrow.toml").write_text(NARROW_SPACE, encoding="utf-8")
    return d


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(target=st.one_of(numbers.map(str), st.integers(min_value=400_000, max_value=600_000).map(str),
                        st.text(max_size=12)),
       tolerance=st.one_of(values, numbers.map(lambda v: f"{v}%")),
       fixes=st.lists(assignments, max_size=2),
       study=st.one_of(st.none(), st.text(max_size=40)))
def test_search_inputs_never_crash(search_dir: Path, target: str, tolerance: str, fixes: list[str], study: str | None):
    args = ["search", "--target", target, "--tolerance", tolerance, "--space", str(search_dir / "narrow.toml"),
            "--trials", "1", "--storage", f"sqlite:///{search_dir / 's.db'}", "--json"]
    for f in fixes:
        args += ["--fix", f]
    if study is not None:
        args += ["--study", study]
    _check(args)


# ---- the API, calibrate, export and report (issue 23) ------------------------------------------------

anything = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12), st.lists(numbers, max_size=3),
                     st.tuples(numbers, numbers), st.dictionaries(st.text(max_size=5), numbers, max_size=2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=st.one_of(anything, st.dictionaries(st.sampled_from(FIELD_NAMES + ("bogus",)), anything, max_size=3)),
       h=anything, w=anything)
def test_count_api_raises_only_project_errors(cfg, h, w):  # type: ignore[no-untyped-def]
    from featherface_tune import count
    from featherface_tune.errors import FeatherFaceError

    t0 = time.perf_counter()
    try:
        count(cfg, h, w)
    except FeatherFaceError as exc:
        assert str(exc) and "\n" not in str(exc)
    assert time.perf_counter() - t0 < 15


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(kwargs=st.fixed_dictionaries({}, optional={
    "target": st.one_of(anything, st.integers(400_000, 600_000)), "tolerance": st.one_of(anything, values),
    "trials": anything, "top": anything, "seed": anything, "storage": st.one_of(anything, st.just("")),
    "study": anything, "input_size": anything, "objective": st.one_of(anything, values), "timeout": anything,
    "max_macs": anything}))
def test_search_api_raises_only_project_errors(search_dir: Path, kwargs):  # type: ignore[no-untyped-def]
    from featherface_tune import search
    from featherface_tune.errors import FeatherFaceError

    kwargs.setdefault("target", 489_000)
    target = kwargs.pop("target")
    t0 = time.perf_counter()
    try:  # a valid call runs: the narrow space, one optimum, in memory
        search(target, space=search_dir / "narrow.toml", **{"top": 1, "trials": 1, **kwargs, "storage": None}
               if kwargs.get("storage") in (None, 5) else {"top": 1, "trials": 1, **kwargs})
    except FeatherFaceError as exc:
        assert str(exc)
    assert time.perf_counter() - t0 < 60


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(opts=st.lists(st.tuples(st.sampled_from(["--target", "--tolerance", "--seeds", "--epochs", "--reference-epochs",
                                                "--configs", "--image-size", "--min-tau", "--metric"]),
                               st.one_of(values, numbers.map(str))), min_size=1, max_size=3))
def test_calibrate_inputs_never_crash(search_dir: Path, opts):  # type: ignore[no-untyped-def]
    args = ["calibrate", "--proxy-data", str(search_dir), "--out", str(search_dir / "cal")]
    for flag, value in opts:
        args += [flag, value]
    _check(args, limit=60, lines=8)  # a valid command prints what it calibrates before the data is read


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(opset=st.one_of(values, numbers.map(str)), tolerance=st.one_of(values, numbers.map(str)),
       out=st.one_of(st.text(max_size=20), st.sampled_from(["/dev/null", "/dev/full", ".", "/", "x.onnx"])))
def test_export_inputs_never_crash(search_dir: Path, monkeypatch: pytest.MonkeyPatch, opset, tolerance, out):  # type: ignore[no-untyped-def]
    pytest.importorskip("onnx")
    import featherface_tune.deploy.export as export
    from featherface_tune.errors import InputError

    def no_export(*a, **k):  # type: ignore[no-untyped-def]  # every check before the minute of tracing ran
        raise InputError("export reached")

    monkeypatch.setattr(export, "export_onnx", no_export)
    target = out if out.startswith("/") else str(search_dir / out)
    _check(["export", "--preset", "featherface-official", "--out", target, "--opset", opset, "--tolerance", tolerance])
    assert not Path("/dev/null").is_file() and not Path("/dev/full").is_file()


@pytest.fixture(scope="module")
def report_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "reports"))
    from report_study_factory import make_study

    url = f"sqlite:///{tmp_path_factory.mktemp('rep') / 'r.db'}"
    make_study(url, name="s", n=3)
    return url


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(study=st.one_of(st.none(), st.just("s"), st.text(max_size=20)),
       fmt=st.one_of(st.none(), st.sampled_from(["table", "md", "csv", "json", "html"]), st.text(max_size=6)),
       top=st.one_of(st.none(), numbers.map(str)), trial=st.one_of(st.none(), numbers.map(str), values),
       size=st.one_of(st.none(), st.tuples(numbers.map(str), numbers.map(str))))
def test_report_inputs_never_crash(report_db: str, study, fmt, top, trial, size):  # type: ignore[no-untyped-def]
    args = ["report", "--storage", report_db]
    for flag, value in (("--study", study), ("--format", fmt), ("--top", top), ("--trial", trial)):
        if value is not None:
            args += [flag, value]
    if size is not None:
        args += ["--input-size", *size]
    _check(args)
