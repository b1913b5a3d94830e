"""`featherface-tune gate` end to end: exit codes, module diffs, every output format parsed back,
--update round trip, --verify, and this repository's own budgets."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.counter.analytic import count
from featherface_tune.models.presets import get_preset

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

GOOD = """\
name = "official"
description = "the official code"

[model]
preset = "featherface-official"

[params]
target = 592371
tolerance = 0

[macs]
input_size = [640, 640]
target = 1274888576
tolerance = "0.5%"
"""

# 489k config budget, whose model a "change" then widens (neck 42 -> 44)
NARROW = """\
name = "exact-489k"

[model]
preset = "featherface-official"
neck_channels = 42
neck_cbam_reduction = 8
ssh_channels = [56, 72, 72]

[params]
target = 489000
tolerance = 0
"""

INVALID = '[model]\npreset = "featherface-official"\n[params]\ntarget = 600000\nmax = 500000\n'

GITHUB = re.compile(r"^::(error|warning|notice) file=([^,]+),line=(\d+),title=([^:]+)::(.+)$")


def gate(*args: str):
    return runner.invoke(app, ["gate", *args])


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory with budgets/: one passing budget and one whose model will be changed."""
    (tmp_path / "budgets").mkdir()
    (tmp_path / "budgets" / "official.toml").write_text(GOOD)
    (tmp_path / "budgets" / "narrow.toml").write_text(NARROW)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def widen(project: Path) -> None:
    p = project / "budgets" / "narrow.toml"
    p.write_text(p.read_text().replace("neck_channels = 42", "neck_channels = 44"))


def test_all_pass_exit_0(project):
    r = gate()
    assert r.exit_code == 0, r.output
    assert "official" in r.stdout and "exact-489k" in r.stdout
    assert re.search(r" params \(numel\)\s", r.stdout)  # the convention beside every figure
    assert "FAIL" not in r.stdout
    assert "2 passed, 0 failed" in r.stderr


def test_violation_exit_1_with_module_diff(project):
    assert gate("--update").exit_code == 0
    widen(project)
    r = gate()
    assert r.exit_code == 1, r.output
    base = count(get_preset("featherface-489k"))
    now = count(get_preset("featherface-489k").replace(neck_channels=44))
    assert f"{now.params - 489000:+,}" in r.stdout  # total delta
    assert "exact-489k" in r.stdout and "violated" in r.stdout
    moved = {g for g in base.modules if base.modules[g] != now.modules[g]}
    assert moved == {"neck", "neck_cbam", "ssh"}
    for g in moved:  # every moved module is listed with its params delta
        d = now.modules[g].params - base.modules[g].params
        assert re.search(rf"│ {g}\s+│.*{re.escape(f'{d:+,}')}", r.stdout), r.stdout
    for g in set(base.modules) - moved:
        assert not re.search(rf"│ {g}\s+│", r.stdout)
    assert "1 passed, 1 failed" in r.stderr


def test_violation_without_baseline_says_so(project):
    widen(project)
    r = gate()
    assert r.exit_code == 1
    assert "no recorded baseline (run `featherface-tune gate --update`)" in r.stdout
    # the library states the fact; the command line to run comes from the command layer
    from featherface_tune.budgets.formats import Hints, to_github
    from featherface_tune.budgets.gate import run_gate

    report = run_gate(sorted((project / "budgets").glob("*.toml")))
    plain, hinted = to_github(report), to_github(report, Hints(update="featherface-tune gate --update"))
    assert "no recorded baseline" in "\n".join(plain) and "featherface-tune" not in "\n".join(plain)
    assert "no recorded baseline (run `featherface-tune gate --update`)" in "\n".join(hinted)


def test_invalid_file_exit_2_beats_violation(project):
    widen(project)
    (project / "budgets" / "zz-bad.toml").write_text(INVALID)
    r = gate()
    assert r.exit_code == 2
    assert "budgets/zz-bad.toml:4: params.target" in r.stderr
    assert "contradictory" in r.stderr


def test_missing_file_and_empty_dir_exit_2(project, tmp_path_factory, monkeypatch):
    r = gate("budgets/nope.toml")
    assert r.exit_code == 2 and "nope.toml" in r.stderr and "does not exist" in r.stderr
    r = gate("--format", "xml")
    assert r.exit_code == 2 and "--format" in r.stderr
    monkeypatch.chdir(tmp_path_factory.mktemp("empty"))
    r = gate()
    assert r.exit_code == 2 and "no budget files" in r.stderr


def test_json_format(project):
    widen(project)
    (project / "budgets" / "zz-bad.toml").write_text(INVALID)
    r = gate("--format", "json")
    assert r.exit_code == 2
    data = json.loads(r.stdout)
    assert data["exit_code"] == 2 and data["ok"] is False
    assert data["summary"] == {"passed": 1, "failed": 1, "invalid": 1}
    by_name = {b["name"]: b for b in data["budgets"]}
    ok = by_name["official"]
    assert ok["verdict"] == "pass"
    assert [(c["metric"], c["measured"], c["delta"]) for c in ok["checks"]] == [
        ("params", 592371, 0), ("macs", 1274888576, 0)]
    assert ok["checks"][1]["bound"] == {"target": 1274888576, "tolerance": "0.5%"}
    bad = by_name["exact-489k"]
    assert bad["verdict"] == "fail" and bad["checks"][0]["delta"] > 0
    assert bad["config"]["neck_channels"] == 44
    assert data["errors"] == [{"file": "budgets/zz-bad.toml", "key": "params.target", "line": 4,
                               "message": data["errors"][0]["message"]}]
    assert json.loads(gate("--json").stdout) == data  # --json is the same


def test_junit_format(project):
    assert gate("--update").exit_code == 0
    widen(project)
    (project / "budgets" / "zz-bad.toml").write_text(INVALID)
    r = gate("--format", "junit")
    assert r.exit_code == 2
    root = ET.fromstring(r.stdout)
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == "4"  # official: params+macs, narrow: params, bad file
    assert suite.get("failures") == "1" and suite.get("errors") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["exact-489k: params"]
    text = failed[0].find("failure").text
    assert "neck" in text and "ssh" in text and "outside budget" in failed[0].find("failure").get("message")
    errored = [c for c in cases if c.find("error") is not None]
    assert errored[0].get("file") == "budgets/zz-bad.toml"


def test_github_format(project):
    gate("--update")
    widen(project)
    (project / "budgets" / "zz-bad.toml").write_text(INVALID)
    r = gate("--format", "github")
    assert r.exit_code == 2
    annotations = [GITHUB.match(line) for line in r.stdout.splitlines() if line.startswith("::")]
    assert all(annotations), r.stdout
    got = {(m.group(1), m.group(2), int(m.group(3))) for m in annotations}
    assert got == {("error", "budgets/narrow.toml", 10), ("error", "budgets/zz-bad.toml", 4)}
    msg = next(m.group(5) for m in annotations if m.group(2) == "budgets/narrow.toml")
    assert "outside budget 489,000 ± 0" in msg and "neck +" in msg and "ssh +" in msg
    assert any(line.startswith("budget official") and "pass" in line for line in r.stdout.splitlines())


def test_github_escapes_percent_and_newlines(project):
    (project / "budgets" / "official.toml").write_text(GOOD.replace("target = 1274888576", "target = 800000000"))
    r = gate("--format", "github", "budgets/official.toml")
    assert r.exit_code == 1
    line = next(x for x in r.stdout.splitlines() if x.startswith("::error"))
    assert "0.5%25" in line and "0.5% " not in line


def test_update_round_trip(project):
    p = project / "budgets" / "narrow.toml"
    r = gate("--update")
    assert r.exit_code == 0 and "recorded baseline in budgets/narrow.toml" in r.stderr
    text = p.read_text()
    assert text.startswith(NARROW)  # the rest of the file is kept verbatim
    data = tomllib.loads(text)
    expected = count(get_preset("featherface-489k"))
    assert data["baseline"]["params"] == 489000
    assert data["baseline"]["modules"] == {g: {"params": c.params, "macs": c.macs} for g, c in expected.modules.items()}
    r = gate("--update")
    assert "baseline unchanged in budgets/narrow.toml" in r.stderr and p.read_text() == text
    # after an intended change the baseline moves with it, and the budget itself is untouched
    widen(project)
    r = gate("--update", "budgets/narrow.toml")
    assert r.exit_code == 1  # the budget is still violated: --update never edits bounds
    data = tomllib.loads(p.read_text())
    assert data["params"] == {"target": 489000, "tolerance": 0}
    assert data["baseline"]["modules"]["neck"]["params"] == count(
        get_preset("featherface-489k").replace(neck_channels=44)).modules["neck"].params


def test_stale_baseline_on_a_passing_budget_is_a_note(project):
    p = project / "budgets" / "loose.toml"
    p.write_text('[model]\npreset = "featherface-official"\n[params]\nmax = 600000\n')
    assert gate("--update", "budgets/loose.toml").exit_code == 0
    p.write_text(p.read_text().replace('preset = "featherface-official"',
                                       'preset = "featherface-official"\nshuffle = "plain"'))
    r = gate("budgets/loose.toml")
    assert r.exit_code == 0  # still within max, but the shuffle module moved
    assert "stale" in r.stderr and "shuffle -" in r.stderr
    r = gate("--format", "github", "budgets/loose.toml")
    assert r.exit_code == 0
    notes = [GITHUB.match(x) for x in r.stdout.splitlines() if x.startswith("::")]
    assert [(m.group(1), m.group(2)) for m in notes] == [("notice", "budgets/loose.toml")]
    assert "shuffle -" in notes[0].group(5)


def test_verify_small_input(project):
    (project / "budgets" / "small.toml").write_text(
        '[model]\npreset = "featherface-489k"\n[params]\ntarget = 489000\n[macs]\ninput_size = [64, 64]\nmax = 100000000\n')
    r = gate("--verify", "--json", "budgets/small.toml")
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)["budgets"][0]["verification"]
    assert v["ok"] is True and v["numel_params"] == 489000 and v["mismatches"] == []


def test_repo_budgets_all_pass(monkeypatch):
    files = sorted((REPO / "budgets").glob("*.toml"))
    names = {f.stem for f in files}
    assert {"retinaface-mnet025", "featherface-official", "featherface-v1-489k", "featherface-489k"} <= names
    monkeypatch.chdir(REPO)
    r = gate("--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    measured = {b["name"]: b["checks"][0]["measured"] for b in data["budgets"]}
    assert measured["retinaface-mnet025"] == 426608
    assert measured["featherface-official"] == 592371
    assert measured["featherface-v1-489k"] == 488664
    assert measured["featherface-489k"] == 489000
    text = gate()
    assert re.search(r"^ ?featherface-official-thop\s+params \(thop\)\s", text.stdout, re.M)
    assert "thop: thop 0.1.1 profile" in text.stdout  # the rule of every convention other than numel
    thop = next(b for b in data["budgets"] if b["name"] == "featherface-official-thop")
    assert thop["convention"] == "thop" and [c["measured"] for c in thop["checks"]] == [488_661, 1_012_598_976]
    for b in data["budgets"]:  # each ships a recorded baseline that is current
        assert b["has_baseline"] and b["moved"] == [], b["name"]
        assert [c["metric"] for c in b["checks"]] == ["params", "macs"]


def test_repo_budgets_copied_elsewhere_still_pass(tmp_path, monkeypatch):
    shutil.copytree(REPO / "budgets", tmp_path / "budgets")
    monkeypatch.chdir(tmp_path)
    r = gate("--format", "junit")
    assert r.exit_code == 0
    suite = ET.fromstring(r.stdout).find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) >= 8


def test_verify_mismatch_fails_with_exit_1(project, monkeypatch):
    import featherface_tune.counter.crosscheck as crosscheck

    def fake_check(cfg, h, w, dcn_macs="full"):
        r = count(cfg, h, w, dcn_macs=dcn_macs)
        mods = {g: (c.params, c.macs) for g, c in r.modules.items()}
        bad = dict(mods, neck=(mods["neck"][0] + 1, mods["neck"][1]))
        return crosscheck.CheckResult(r.params, r.params + 1, r.macs, r.macs, 2 * r.macs, mods, bad)

    monkeypatch.setattr(crosscheck, "check", fake_check)
    r = gate("--verify", "--format", "junit", "budgets/official.toml")
    assert r.exit_code == 1, r.output
    cases = ET.fromstring(r.stdout).find("testsuite").findall("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["official: cross-check"]
    assert "numel" in failed[0].find("failure").get("message")
    data = json.loads(gate("--verify", "--json", "budgets/official.toml").stdout)
    assert data["budgets"][0]["verdict"] == "fail"
    assert data["budgets"][0]["checks"][0]["verdict"] == "pass"  # the budget itself holds
    assert any("cross-check failed" in reason for reason in data["budgets"][0]["reasons"])


def test_a_budget_written_for_dense_macs_says_how_to_keep_them(project):
    """Before 0.2.0 a [macs] bound without dcn_macs meant dense MACs: the failure names the fix, and
    stating dcn_macs = "dense" restores the old figures."""
    old = GOOD.replace("target = 1274888576", "target = 915637376")
    p = project / "budgets" / "official.toml"
    p.write_text(old)
    r = gate("budgets/official.toml")
    assert r.exit_code == 1 and 'add dcn_macs = "dense" under [macs]' in r.stdout + r.stderr
    p.write_text(old.replace('tolerance = "0.5%"', 'tolerance = "0.5%"\ndcn_macs = "dense"'))
    assert gate("budgets/official.toml").exit_code == 0
