"""Property test: whatever strings and numbers reach --set, --fix, --study, --target and --tolerance,
the command ends within seconds with exit 0, 1 or 2, never a traceback, and a bad input costs at most
three lines on stderr."""

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


def _check(args: list[str]) -> None:
    t0 = time.perf_counter()
    r = runner.invoke(app, args)
    seconds = time.perf_counter() - t0
    assert r.exit_code in (0, 1, 2), (args, r.exit_code, repr(r.exception), r.output[-1000:])
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
    assert "Traceback" not in r.output and "Traceback" not in r.stderr, args
    if r.exit_code == 2:
        assert len(r.stderr.strip().splitlines()) <= 3, (args, r.stderr)
    assert seconds < 15, (args, seconds)


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
