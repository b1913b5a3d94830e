"""`featherface-tune gate`: check every budget file; fail the build when a budget is broken."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import JsonOpt, err, fail, handle_errors, out, print_json

FilesArg = Annotated[Optional[List[Path]], typer.Argument(
    help="Budget files (TOML). Default: every budgets/*.toml under the working directory.",
    show_default=False)]
FormatOpt = Annotated[str, typer.Option(
    "--format", "-f", help="Output: text (tables), json, junit (JUnit XML) or github (Actions annotations).")]


@handle_errors
def gate_cmd(
    files: FilesArg = None,
    verify: Annotated[bool, typer.Option("--verify", help="Also build each model and cross-check the analytic count against numel() and fvcore (slower).")] = False,
    format_: FormatOpt = "text",
    json_: JsonOpt = False,
    update: Annotated[bool, typer.Option("--update", help="Record each budget's current per-module breakdown as its baseline (rewrites the \\[baseline] table only).")] = False,
) -> None:
    """Check parameter (and MAC) budgets: exit 0 when all pass, 1 when one is violated, 2 when a budget file is invalid.

    Counts each budget's model analytically and prints budget, measured, delta and verdict; a violated budget lists the modules that moved against the breakdown recorded by --update.
    """
    from featherface_tune.budgets.file import discover, display_path, load_budget, write_baseline
    from featherface_tune.budgets.formats import (
        FORMATS, Hints, print_file_error, render_text, to_github, to_json, to_junit,
    )
    from featherface_tune.budgets.gate import GateReport, baseline_record, evaluate, run_gate

    fmt = "json" if json_ else format_.lower()
    if fmt not in FORMATS:
        raise fail(f"--format {format_!r}: must be one of {', '.join(FORMATS)}")
    if json_ and format_.lower() not in ("text", "json"):
        raise fail(f"--json and --format {format_} contradict each other")
    paths = list(files) if files else discover()
    if not paths:
        raise fail(f"no budget files: {display_path(Path.cwd())}/budgets/*.toml matches nothing "
                   "(name files on the command line)")

    if verify:
        try:
            import torch  # noqa: F401  (the gate itself is torch-free; --verify builds each model)
        except ImportError:
            raise fail("--verify builds each model and needs torch, which does not import here; "
                       "the gate without --verify does not need it") from None
        with err.status(f"building {len(paths)} model(s) and cross-checking with fvcore..."):
            report = run_gate(paths, with_verify=True)
    else:
        report = run_gate(paths)

    if update:
        from featherface_tune.atomic import check_replaceable

        for r in report.results:  # all or none: no budget rewritten before one is found unwritable
            check_replaceable(r.budget.path, "budget file")
        updated = []
        for r in report.results:
            changed = write_baseline(r.budget.path, baseline_record(r.count))
            err.print(("recorded baseline in " if changed else "baseline unchanged in ") + r.budget.shown,
                      highlight=False, markup=False)
            fresh = evaluate(load_budget(r.budget.path))
            updated.append(dataclasses.replace(fresh, verification=r.verification))
        report = GateReport(results=tuple(updated), errors=report.errors)

    hints = Hints(update="featherface-tune gate --update", whole="--format json")
    if fmt == "text":
        render_text(report, out, err, hints)
    else:
        for e in report.errors:
            print_file_error(err, e)
        if fmt == "json":
            print_json(to_json(report))
        elif fmt == "junit":
            sys.stdout.write(to_junit(report, hints))
        else:
            sys.stdout.write("\n".join(to_github(report, hints)) + "\n")
    if report.exit_code:
        raise typer.Exit(code=report.exit_code)
