"""`featherface-tune report`: a study (or a set of configs) as tables, files and plots."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import StorageOpt, err, handle_errors, input_size, warn
from featherface_tune.commands._tables import print_tables as _print_tables
from featherface_tune.errors import InputError
from featherface_tune.models.config import DEFAULT_INPUT


def _write(text: str) -> None:
    import sys

    sys.stdout.write(text)
    sys.stdout.flush()


def _report_calibration(folder: Path, fmt: Optional[str]) -> None:
    import json

    from featherface_tune.calibration import load_calibration, tables

    data = load_calibration(folder)
    if fmt == "json":
        _write(json.dumps(data, indent=2) + "\n")
    elif fmt in (None, "table"):
        _print_tables(tables(data))
    else:
        raise InputError(f"--format {fmt}: a calibration folder is shown as table or json")


@handle_errors
def report_cmd(
    extra: Annotated[Optional[List[str]], typer.Argument(
        metavar="CONFIG", show_default=False,
        help="More configs for --compare (so `--compare A B C` works).")] = None,
    study: Annotated[Optional[str], typer.Option(
        "--study", help="Study name (default: the storage's only study).")] = None,
    storage: StorageOpt = None,
    compare: Annotated[Optional[List[str]], typer.Option(
        "--compare", metavar="A B ...",
        help="Compare configs module by module instead of reporting a study: preset names or "
             "config files (an existing path is a file, anything else a preset).")] = None,
    format_: Annotated[Optional[str], typer.Option(
        "--format", "-f", metavar="table|md|csv|json|html",
        help="Output on stdout: rich tables (default), Markdown, CSV (all trials, or the module "
             "table with --compare), JSON (everything) or a standalone HTML page.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="DIR",
        help="Write a bundle: index.html with tables and plots, plots as PNG and SVG, CSV, "
             "Markdown and JSON. Then stdout gets nothing unless --format is given.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the report bundle --out DIR already holds (refused without it).")] = False,
    size: Annotated[Optional[Tuple[int, int]], typer.Option(
        "--input-size", metavar="H W",
        help="Input size for MACs of the breakdown and --compare (default: the study's, or 640 640).")] = None,
    top: Annotated[int, typer.Option("--top", help="How many top configs to list.")] = 10,
    trial: Annotated[Optional[int], typer.Option(
        "--trial", help="Break down this trial instead of the best one.")] = None,
    dcn_macs: Annotated[Optional[str], typer.Option(
        "--dcn-macs", metavar="full|dense",
        help="MAC convention of the breakdown and --compare: full counts the DCN offset and modulator "
             "convs, dense leaves them out (default: the study's own; full for --compare).")] = None,
) -> None:
    """Report a search: feasible vs infeasible trials, the top configs, the Pareto front and the
    per-module breakdown of the best config; or compare configs module by module.

    Examples: `featherface-tune report --study s1 --out report/`;
    `featherface-tune report --compare featherface-official featherface-489k`.
    """
    from featherface_tune.counter.conventions import get_convention
    from featherface_tune.reports import data, render

    fmt = "json" if json_ else format_
    if json_ and format_ not in (None, "json"):
        raise InputError(f"--json contradicts --format {format_}")
    if fmt is not None and fmt not in render.FORMATS:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(render.FORMATS)}")
    specs = list(compare or []) + list(extra or [])
    if extra and not compare and len(extra) == 1 and Path(extra[0]).is_dir():
        return _report_calibration(Path(extra[0]), fmt)  # a `calibrate --out` folder
    if extra and not compare:
        raise InputError(f"unexpected argument {extra[0]!r}; to compare configs use --compare A B")
    hw = input_size(size) if size is not None else None

    if specs:
        if study is not None:
            raise InputError("--compare compares configs and does not read a study; drop --study")
        if trial is not None:
            raise InputError("--trial applies to a study report, not to --compare")
        comparison = data.compare(specs, hw or DEFAULT_INPUT, get_convention("numel", dcn_macs or "full"))
        obj: data.StudyReport | data.Comparison = comparison
        doc = render.compare_document(comparison)
    else:
        report = data.load_report(storage, study, top=top, trial=trial, input_size=hw, dcn_macs=dcn_macs)
        obj = report
        doc = render.study_document(report)

    for w in doc.warnings:
        warn(w)
    if out_dir is not None:
        from featherface_tune.reports.bundle import write_bundle

        from rich.text import Text

        with err.status(Text(f"writing the report bundle to {out_dir}...")):
            b = write_bundle(obj, out_dir, doc, overwrite=overwrite)
        err.print(f"wrote {len(b.files)} files ({b.size_bytes / 1024:,.0f} KiB, {len(b.plots)} plots) "
                  f"in {b.seconds:.1f}s; open {b.index}", highlight=False, soft_wrap=True)
        if fmt is None:
            return
    if fmt in (None, "table"):
        _print_tables(render.terminal_tables(doc))
        return
    # Markdown names the format option for a section's whole rows (the library does not spell flags)
    _write(render.to_markdown(doc, whole="--format csv") if fmt == "md" else render.RENDERERS[fmt](doc))
