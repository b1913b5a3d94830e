"""Text from file names, budget names and study data cannot forge output: no second GitHub workflow
command from a newline, no live HTML in Markdown, no spreadsheet formula in CSV."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest

from featherface_tune.reports.render import formula_safe

PASSING = '[model]\npreset = "featherface-official"\n[params]\nmax = 600000\n'
FAILING = '[model]\npreset = "featherface-official"\n[params]\nmax = 100\n'


@pytest.mark.parametrize("body", [PASSING, FAILING])
def test_gate_github_cannot_be_forged_by_a_file_name(cli, tmp_path: Path, body: str):
    budget = tmp_path / "b\n::error file=x.toml,line=1::forged 100%.toml"
    budget.write_text(body, encoding="utf-8")
    r = cli("gate", budget, "--format", "github")
    lines = r.stdout.splitlines()
    assert not [ln for ln in lines if "forged" in ln and ln.startswith("::error file=x.toml")]
    assert all(ln.startswith(("::", "budget ", "gate: ")) for ln in lines), lines
    assert len(lines) == 2  # one line for the budget (a pass line or an ::error), one summary line
    assert "%0A::error file=x.toml" in r.stdout or "%0A%3A%3Aerror file=x.toml" in r.stdout


def test_gate_refuses_a_multi_line_budget_name(cli, tmp_path: Path):
    budget = tmp_path / "b.toml"
    budget.write_text('name = "x\\n::error::forged"\n' + PASSING, encoding="utf-8")
    r = cli("gate", budget, "--format", "github")
    assert r.exit_code == 2
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("::error")]
    assert len(errors) == 1 and "one line" in errors[0]
    assert not [ln for ln in r.stdout.splitlines() if ln.startswith("::error::forged")]


@pytest.fixture
def hostile_configs(tmp_path: Path) -> list[str]:
    names = ["<script>alert(1)<", "=HYPERLINK(1)", "@SUM(1)", "+1-2", "-3+x"]
    paths = []
    for i, n in enumerate(names):
        p = tmp_path / f"{n}.toml"
        p.write_text(f"neck_channels = {40 + i}\n", encoding="utf-8")
        paths.append(str(p.relative_to(tmp_path)))
    return paths


def test_report_markdown_html_and_csv_are_inert(cli, tmp_path: Path, hostile_configs: list[str],
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)

    def report(*options: object):  # type: ignore[no-untyped-def]
        # `--` ends the options, so "-3+x.toml" is a file name, not an option
        return cli("report", "--compare", hostile_configs[0], *options, "--", *hostile_configs[1:])

    md = report("--format", "md")
    assert md.exit_code == 0, md.output
    assert "<script>" not in md.stdout and "&lt;script&gt;" in md.stdout
    page = report("--format", "html")
    assert "<script>alert" not in page.stdout
    table = report("--format", "csv")
    rows = list(csv.reader(io.StringIO(table.stdout)))
    cells = [c for row in rows for c in row]
    assert cells and not [c for c in cells if c.startswith(("=", "+", "@")) or (c.startswith("-") and not _number(c))]
    assert any(c.startswith("'=HYPERLINK") for c in cells)
    bundle = report("--out", tmp_path / "b")
    assert bundle.exit_code == 0, bundle.output
    for f in (tmp_path / "b").glob("*.csv"):
        for c in [c for row in csv.reader(f.open(encoding="utf-8")) for c in row]:
            assert not c.startswith(("=", "+", "@")) and not (c.startswith("-") and not _number(c)), (f, c)
    assert "<script>alert" not in (tmp_path / "b" / "report.md").read_text(encoding="utf-8")


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("cell,expected", [("=1+2", "'=1+2"), ("@x", "'@x"), ("+x", "'+x"), ("-x", "'-x"),
                                           ("\tx", "'\tx"), ("\rx", "'\rx"), ("-12", "-12"), ("1e3", "1e3"),
                                           ("plain", "plain"), (-5, -5)])
def test_formula_safe(cell, expected):  # type: ignore[no-untyped-def]
    assert formula_safe(cell) == expected


HOSTILE_NAMES = ["x\n::error::forged", "x\r::error::forged", "red\x1b[31mX\x1b]0;title\x07", "bidi\u202egnp.exe",
                 "sep\u2028::error::forged", "c1\x9b31m"]


def _no_raw_controls(text: str) -> None:
    assert not [ln for ln in text.splitlines() if ln.startswith("::error::forged")], text
    assert not any(c in text for c in "\x1b\x07\x9b\u202e\u2028\r"), repr(text)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_report_prints_a_hostile_study_name_escaped(cli, tmp_path: Path, name: str):
    import optuna

    from featherface_tune.tuner.study import open_storage

    sys.path.insert(0, str(Path(__file__).parents[1] / "reports"))
    from report_study_factory import make_study

    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url, name=name, n=3)
    storage, _ = open_storage(url)
    for fmt in ("table", "md", "html", "csv"):
        r = cli("report", "--study", name, "--storage", url, "--format", fmt)
        assert r.exit_code == 0, r.output
        _no_raw_controls(r.stdout)
        _no_raw_controls(r.stderr)
    r = cli("report", "--study", name + "?", "--storage", url)  # the error lists the study names
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    _no_raw_controls(r.stderr)
    assert optuna.study.get_all_study_names(storage) == [name]


@pytest.mark.parametrize("name", ["ctl\x01\x1b[31m", "nul\x0bvt\x0cff"])
def test_gate_junit_stays_well_formed_and_github_inert(cli, tmp_path: Path, name: str):
    import xml.etree.ElementTree as ET

    budget = tmp_path / f"{name}.toml"
    budget.write_text(FAILING, encoding="utf-8")
    r = cli("gate", budget, "--format", "junit")
    assert r.exit_code == 2, r.output  # such a name is refused, as an error case in the JUnit file
    root = ET.fromstring(r.stdout.split("?>", 1)[1])  # raises when not well-formed
    assert root.find(".//error") is not None
    r = cli("gate", budget, "--format", "github")
    _no_raw_controls(r.stdout)
    r = cli("gate", budget)
    _no_raw_controls(r.stdout + r.stderr)
