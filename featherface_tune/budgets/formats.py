"""Presenting a `GateReport`: rich text tables, JSON, JUnit XML and GitHub Actions annotations.

Pure functions of the report (the text renderer takes the consoles to print on); no counting here.
What a report suggests running comes from the command layer as `Hints` (the library names no
command line); without them the report states the facts alone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from featherface_tune.budgets.gate import GateReport, GateResult, ModuleDiff
from featherface_tune.budgets.schema import BudgetFileError
from featherface_tune.escaping import printable, xml_safe
from featherface_tune.terminal import print_table, print_wrapped

FORMATS = ("text", "json", "junit", "github")


@dataclass(frozen=True)
class Hints:
    """How to run what a report suggests, as the command layer spells it (empty: not suggested)."""

    update: str = ""  # the command line that records the current baselines
    whole: str = ""  # where a table cut to fit the terminal is shown whole


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _metric_label(result: GateResult, metric: str) -> str:
    return "params" if metric == "params" else f"MACs @{_size(result.budget.input_size)}"


def _figure_label(result: GateResult, metric: str) -> str:
    """The metric with the convention its figures are counted in, e.g. `params (thop)`."""
    return f"{_metric_label(result, metric)} ({result.budget.convention})"


def _signed(v: int | None) -> str:
    return "-" if v is None else f"{v:+,}"


def _plain(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


# ---- text ----------------------------------------------------------------------------------

def summary_table(report: GateReport) -> Table:
    """One row naming each budget, then one row per budgeted metric: narrow enough for 80 columns
    with the longest budget names."""
    verified = any(r.verification is not None for r in report.results)
    t = Table(title="budget gate", title_justify="left")
    # the metric names its convention, e.g. "params (thop)": the convention stands beside every figure
    for col, right in (("budget / metric", False), ("bound", True),
                       ("measured", True), ("delta", True), ("verdict", False)):
        t.add_column(col, justify="right" if right else "left", no_wrap=True)
    if verified:
        t.add_column("verified")
    for r in report.results:
        v = r.verification
        check = "" if v is None else (Text("ok", "green") if v.ok else Text("MISMATCH", "bold red"))
        t.add_row(Text(r.budget.name, "bold"), "", "", "", "", *([check] if verified else []))
        for c in r.checks:
            verdict = Text("pass", "green") if c.ok else Text("FAIL", "bold red")
            row: list[Any] = ["  " + _figure_label(r, c.metric), c.bound.describe(), f"{c.measured:,}",
                              f"{c.delta:+,}", verdict]
            t.add_row(*row, *([""] if verified else []))
    return t


def module_tables(result: GateResult, only_moved: bool = True) -> list[Table]:
    """The modules against the recorded baseline: a params table and a MACs table."""
    rows: tuple[ModuleDiff, ...] = result.moved if only_moved else result.modules
    tables = []
    for metric in ("params", "MACs"):
        t = Table(title=Text(f"{result.budget.name}: module {metric} against the recorded baseline "
                             f"({result.budget.convention} convention)"), title_justify="left")
        for col in ("module", f"baseline {metric}", metric, f"Δ {metric}"):
            t.add_column(col, justify="left" if col == "module" else "right")
        for d in rows:
            if metric == "params":
                t.add_row(d.module, _plain(d.baseline_params), f"{d.params:,}", _signed(d.params_delta))
            else:
                t.add_row(d.module, _plain(d.baseline_macs), f"{d.macs:,}", _signed(d.macs_delta))
        if metric == "MACs" and not result.macs_comparable:
            t.caption = ("baseline MACs were recorded at another input size, DCN or counting convention: "
                         "not compared")
        tables.append(t)
    return tables


def _print_convention_rules(out: Console, report: GateReport) -> None:
    """One line per counting convention other than numel that a budget uses: its rule."""
    from featherface_tune.counter.conventions import CONVENTIONS

    for name in sorted({r.budget.convention for r in report.results} - {"numel"}):
        print_wrapped(out, f"{name}: {CONVENTIONS[name].summary}")


def print_file_error(err: Console, e: BudgetFileError) -> None:
    err.print(Text.assemble(("error:", "bold red"), " " + str(e)), highlight=False, soft_wrap=True)


def render_text(report: GateReport, out: Console, err: Console, hints: Hints = Hints()) -> None:
    """Table and failure details on `out`; file errors, stale-baseline notes and the summary on `err`."""
    if report.results:
        print_table(out, summary_table(report), optional=("delta",), elsewhere=hints.whole or "the JSON output")
        _print_convention_rules(out, report)
    for r in report.results:
        if r.ok:
            continue
        out.print(Text.assemble((r.budget.name, "bold red"), f" ({r.budget.shown}) violated:"), highlight=False)
        for reason in r.reasons():
            out.print(Text(f"  {reason}"), highlight=False)
        if r.has_baseline and r.moved:
            for table in module_tables(r):
                print_table(out, table, elsewhere=hints.whole or "the JSON output")
        else:
            out.print(Text(f"  modules: {r.moved_summary(hints.update)}"), highlight=False)
    for r in report.results:
        if r.ok and r.has_baseline and (r.moved or not r.macs_comparable):
            err.print(Text.assemble(("note:", "yellow"),
                                    f" {r.budget.name}: passes, but its recorded baseline is stale "
                                    f"({r.moved_summary()})"
                                    + (f"; `{hints.update}` records the current one" if hints.update else "")),
                      highlight=False, soft_wrap=True)
    for e in report.errors:
        print_file_error(err, e)
    parts = [f"{report.passed} passed", f"{report.failed} failed"]
    if report.errors:
        parts.append(f"{len(report.errors)} invalid")
    colour = "green" if report.exit_code == 0 else "red"
    err.print(Text.assemble(("gate:", colour), " " + ", ".join(parts)), highlight=False)


# ---- json ----------------------------------------------------------------------------------

def _result_json(r: GateResult) -> dict[str, Any]:
    b = r.budget
    return {
        "name": b.name,
        "file": b.shown,
        "description": b.description,
        "model": b.model_source,
        "config": b.config.to_dict(),
        "input_size": list(b.input_size),
        "dcn_macs": b.dcn_macs,
        "convention": b.convention,
        "verdict": r.verdict,
        "checks": [
            {"metric": c.metric, "convention": b.convention, "bound": c.bound.to_json(), "bound_text": c.bound.describe(),
             "measured": c.measured, "delta": c.delta, "verdict": c.verdict}
            for c in r.checks
        ],
        "has_baseline": r.has_baseline,
        "baseline_macs_comparable": r.macs_comparable,
        "modules": {
            d.module: {"params": d.params, "baseline_params": d.baseline_params, "params_delta": d.params_delta,
                       "macs": d.macs, "baseline_macs": d.baseline_macs, "macs_delta": d.macs_delta}
            for d in r.modules
        } if r.has_baseline else r.count.to_json()["modules"],
        "moved": [d.module for d in r.moved],
        "verification": None if r.verification is None else {
            "ok": r.verification.ok, "numel_params": r.verification.numel_params,
            "fvcore_macs": r.verification.fvcore_macs, "mismatches": list(r.verification.mismatches)},
        "reasons": r.reasons(),
    }


def _error_json(e: BudgetFileError) -> dict[str, Any]:
    return {"file": e.path, "key": e.key, "line": e.line, "message": e.detail}


def to_json(report: GateReport) -> dict[str, Any]:
    return {
        "ok": report.exit_code == 0,
        "exit_code": report.exit_code,
        "summary": {"passed": report.passed, "failed": report.failed, "invalid": len(report.errors)},
        "budgets": [_result_json(r) for r in report.results],
        "errors": [_error_json(e) for e in report.errors],
    }


# ---- junit ---------------------------------------------------------------------------------

def _details(r: GateResult, hints: Hints) -> str:
    lines = r.reasons() + [f"modules moved: {r.moved_summary(hints.update)}"]
    if r.has_baseline:
        for d in r.moved:
            lines.append(f"  {d.module}: params {_plain(d.baseline_params)} -> {d.params:,} ({_signed(d.params_delta)}), "
                         f"MACs {_plain(d.baseline_macs)} -> {d.macs:,} ({_signed(d.macs_delta)})")
    return "\n".join(lines)


def to_junit(report: GateReport, hints: Hints = Hints()) -> str:
    """JUnit XML: one test case per budgeted metric (and per cross-check); invalid files are errors."""
    cases: list[ET.Element] = []
    failures = 0
    for r in report.results:
        b = r.budget
        classname = f"budgets.{b.path.stem}"
        for c in r.checks:
            tc = ET.Element("testcase", {"classname": classname, "name": f"{b.name}: {_metric_label(r, c.metric)}",
                                         "file": b.shown, "line": str(b.line(*c.keys)), "time": "0"})
            ET.SubElement(tc, "system-out").text = (f"{_figure_label(r, c.metric)}: measured {c.measured:,}, "
                                                    f"budget {c.bound.describe()}, delta {c.delta:+,}")
            if not c.ok:
                failures += 1
                f = ET.SubElement(tc, "failure", {
                    "type": "BudgetViolation",
                    "message": f"{_figure_label(r, c.metric)} {c.measured:,} outside budget {c.bound.describe()} "
                               f"(delta {c.delta:+,})"})
                f.text = _details(r, hints)
            cases.append(tc)
        if r.verification is not None:
            v = r.verification
            tc = ET.Element("testcase", {"classname": classname, "name": f"{b.name}: cross-check",
                                         "file": b.shown, "line": str(b.line("model")), "time": "0"})
            if not v.ok:
                failures += 1
                f = ET.SubElement(tc, "failure", {"type": "CrossCheckMismatch", "message": "; ".join(v.mismatches)})
                f.text = "\n".join(v.mismatches)
            cases.append(tc)
    for e in report.errors:
        tc = ET.Element("testcase", {"classname": "budgets", "name": e.path, "file": e.path,
                                     "line": str(e.line or 1), "time": "0"})
        er = ET.SubElement(tc, "error", {"type": "BudgetFileError", "message": str(e)})
        er.text = str(e)
        cases.append(tc)
    attrs = {"name": "featherface-tune gate", "tests": str(len(cases)), "failures": str(failures),
             "errors": str(len(report.errors)), "skipped": "0", "time": "0"}
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", attrs)
    suite.extend(cases)
    ET.indent(root)
    # xml_safe: a control character in a file or budget name would make the file not well-formed
    return xml_safe(ET.tostring(root, encoding="unicode", xml_declaration=True)) + "\n"


# ---- github --------------------------------------------------------------------------------

def _escape_data(s: str) -> str:
    """GitHub's escaping of a workflow command's message: %, CR and LF (so no text can end the
    command and start another, e.g. a forged `::error`)."""
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return printable(s)  # nor can an ESC restyle the log


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, file: str, line: int, title: str, message: str) -> str:
    """One GitHub Actions workflow command, e.g. `::error file=a.toml,line=3,title=T::message`."""
    return (f"::{level} file={_escape_prop(file)},line={line},title={_escape_prop(title)}::"
            f"{_escape_data(message)}")


def to_github(report: GateReport, hints: Hints = Hints()) -> list[str]:
    """`::error` annotations for violations and invalid files, `::notice` for stale baselines, and a
    plain line for each passing budget."""
    lines: list[str] = []
    for r in report.results:
        b = r.budget
        if r.ok:
            figures = "; ".join(f"{_figure_label(r, c.metric)} {c.measured:,} within {c.bound.describe()}"
                                for c in r.checks)
            # a plain line too: a newline in it would start a forged workflow command
            lines.append(_escape_data(f"budget {b.name} ({b.shown}): pass: {figures}"))
            if r.has_baseline and (r.moved or not r.macs_comparable):
                lines.append(annotation("notice", b.shown, b.line("baseline"), f"stale baseline: {b.name}",
                                        f"passes, but modules moved: {r.moved_summary()}"
                                        + (f"; run `{hints.update}`" if hints.update else "")))
            continue
        moved = r.moved_summary(hints.update)
        for c in r.checks:
            if not c.ok:
                lines.append(annotation(
                    "error", b.shown, b.line(*c.keys), f"budget {b.name} violated",
                    f"{_figure_label(r, c.metric)} {c.measured:,} outside budget {c.bound.describe()} "
                    f"(delta {c.delta:+,}); modules moved: {moved}"))
        if r.verification is not None and not r.verification.ok:
            lines.append(annotation("error", b.shown, b.line("model"), f"budget {b.name}: cross-check failed",
                                    "; ".join(r.verification.mismatches)))
    for e in report.errors:
        lines.append(annotation("error", e.path, e.line or 1, "invalid budget file",
                                f"{e.key + ': ' if e.key else ''}{e.detail}"))
    lines.append(f"gate: {report.passed} passed, {report.failed} failed, {len(report.errors)} invalid")
    return lines
