"""Every output format of `featherface-tune report`, parsed back."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser

import pandas as pd
import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.reports import data, render
from report_study_factory import make_study

runner = CliRunner()


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('render') / 'ff.db'}"
    make_study(url, name="s1", n=14, objectives=("macs", "proxy_ap"), failures=1)
    return url


@pytest.fixture(scope="module")
def report(storage):
    return data.load_report(storage, "s1")


def _run(*args):
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


class Tables(HTMLParser):
    """Collects every <table> as a list of rows of cell texts, and every src/href."""

    def __init__(self):
        super().__init__()
        self.tables, self.refs, self.tags = [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href")]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, d):
        if self._cell is not None:
            self._cell.append(d)


def md_tables(text):
    """Markdown pipe tables as lists of rows (header first, separator dropped)."""
    tables, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")]
            if cur is None:
                cur = []
                tables.append(cur)
            if all(set(c) <= set("-:") and c for c in cells):
                continue
            cur.append(cells)
        else:
            cur = None
    return tables


def test_json_holds_everything(storage, report):
    for args in (["--json"], ["--format", "json"]):
        doc = json.loads(_run("--storage", storage, *args))
        assert doc["kind"] == "study" and doc["study"] == "s1"
        assert doc["counts"] == report.counts
        assert doc["record"]["objectives"] == ["macs", "proxy_ap"]
        assert [r["trial"] for r in doc["top"]] == list(report.top["trial"])
        assert [r["trial"] for r in doc["pareto"]] == list(report.pareto["trial"])
        assert len(doc["trials"]) == 15
        failed = [t for t in doc["trials"] if t["state"] == "FAIL"]
        assert failed[0]["params"] is None and failed[0]["fail_reason"]
        chosen = doc["chosen"]
        assert chosen["trial"] == int(report.top.iloc[0]["trial"])
        assert sum(m["params"] for m in chosen["count"]["modules"].values()) == chosen["count"]["params"]


def test_csv_is_every_trial_with_raw_values(storage, report):
    df = pd.read_csv(io.StringIO(_run("--storage", storage, "--format", "csv")))
    assert len(df) == 15
    assert list(df["trial"]) == list(range(15))
    complete = df[df["state"] == "COMPLETE"]
    assert complete["params"].astype(int).tolist() == report.trials["params"].dropna().astype(int).tolist()
    assert set(df["feasible"]) == {True, False}
    assert "neck_channels" in df and "ssh_channels" in df


def test_markdown_tables_parse_back(storage, report):
    text = _run("--storage", storage, "--format", "md")
    assert text.startswith("# featherface-tune report: s1")
    tables = md_tables(text)
    by_header = {tuple(t[0]): t[1:] for t in tables}
    top = next(rows for h, rows in by_header.items() if h[:3] == ("trial", "params", "delta"))
    assert [int(r[0]) for r in top] == list(report.top["trial"])
    assert [int(r[1].replace(",", "")) for r in top] == list(report.top["params"])
    breakdown = next(rows for h, rows in by_header.items() if h[0] == "module")
    assert breakdown[-1][0] == "total"
    assert int(breakdown[-1][1].replace(",", "")) == report.chosen.result.params
    for t in tables:  # every row has as many cells as its header
        assert {len(r) for r in t} == {len(t[0])}


def test_html_page_parses_and_holds_the_tables(storage, report):
    page = _run("--storage", storage, "--format", "html")
    p = Tables()
    p.feed(page)
    assert "script" not in p.tags
    assert all(r.startswith("#") for r in p.refs), p.refs  # stdout page: in-page anchors only
    top = next(t for t in p.tables if t[0][:3] == ["trial", "params", "delta"])
    assert [int(r[0]) for r in top[1:]] == list(report.top["trial"])


def test_terminal_tables_by_default(storage, report):
    out = _run("--storage", storage, "--top", "3")
    assert "Top 3 feasible configs" in out and "Pareto front" in out
    best = int(report.top.iloc[0]["trial"])
    assert f"Per-module breakdown of trial {best}" in out
    assert f"{report.chosen.result.params:,}" in out


def test_compare_in_every_format():
    args = ["--compare", "featherface-official", "featherface-489k"]
    table = _run(*args)
    assert "-103,371" in table and "neck_channels" in table
    doc = json.loads(_run(*args, "--json"))
    total = next(r for r in doc["modules"] if r["module"] == "total")
    assert total["delta params"] == -103_371
    assert [c["params"] for c in doc["configs"]] == [592_371, 489_000]
    csv = pd.read_csv(io.StringIO(_run(*args, "--format", "csv")))
    assert csv.set_index("module").loc["total", "delta params"] == -103_371
    assert csv["delta params"].iloc[:-1].sum() == -103_371
    md = md_tables(_run(*args, "--format", "md"))
    modules = next(t for t in md if t[0][0] == "module")
    assert modules[-1][:4] == ["total", "592,371", "489,000", "-103,371"]
    p = Tables()
    p.feed(_run(*args, "--format", "html"))
    assert any(row[:4] == ["total", "592,371", "489,000", "-103,371"] for t in p.tables for row in t)


def test_compare_three_with_trailing_arguments_and_input_size():
    doc = json.loads(_run("--compare", "featherface-official", "featherface-489k", "retinaface-mnet025",
                          "--input-size", "320", "320", "--json"))
    assert [c["label"] for c in doc["configs"]] == ["featherface-official", "featherface-489k",
                                                     "retinaface-mnet025"]
    assert doc["input_size"] == [320, 320]


def test_names_are_escaped_in_markdown_and_html(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    make_study(url, name="a|b <script>", n=3)
    md = _run("--storage", url, "--format", "md")
    assert "a\\|b &lt;script&gt;" in md and "<script>" not in md  # Markdown renders raw HTML: never pass it
    page = _run("--storage", url, "--format", "html")
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_cell_formatting():
    assert render.format_cell("params", 592371) == "592,371"
    assert render.format_cell("delta", -103371) == "-103,371"
    assert render.format_cell("delta params", 1284) == "+1,284"
    assert render.format_cell("delta", 0) == "0"
    assert render.format_cell("params_pct", 45.71) == "45.7%"
    assert render.format_cell("ssh_channels", [56, 72, 72]) == "[56, 72, 72]"
    assert render.format_cell("feasible", True) == "yes"
    assert render.format_cell("proxy_ap", float("nan")) == ""
    assert render.format_cell("params", pd.NA) == ""
