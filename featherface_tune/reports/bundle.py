"""`report --out DIR`: a folder that opens in a browser without a server.

Layout::

    DIR/index.html        tables + plots, CSS inline, no scripts, only relative links
    DIR/report.md         the same tables in Markdown (plots linked)
    DIR/report.json       everything, machine-readable
    DIR/<section>.csv     one CSV per table (trials.csv: every trial, every field)
    DIR/plots/<name>.png  and .svg
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

from featherface_tune.atomic import atomic_write_text
from featherface_tune.errors import InputError
from featherface_tune.reports.data import Comparison, StudyReport
from featherface_tune.reports.plots import Plot, plots_for
from featherface_tune.reports.render import (
    Document, Figure, compare_document, raw_frame, study_document, to_html, to_json, to_markdown,
)

PLOT_DIR = "plots"
KNOWN_PLOTS = ("params_vs_macs", "pareto_front", "history", "proxy_ap_vs_macs", "compare_modules",
               "compare_delta")


@dataclass(frozen=True)
class Bundle:
    root: Path
    index: Path
    files: tuple[Path, ...]  # every file written, index included
    plots: tuple[Plot, ...]
    seconds: float

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def document_for(obj: StudyReport | Comparison) -> Document:
    return study_document(obj) if isinstance(obj, StudyReport) else compare_document(obj)


def _prepare(out_dir: Path, names: list[str], overwrite: bool) -> None:
    """The folder exists (created when missing) and holds no earlier bundle unless `overwrite`:
    a report someone kept is never replaced without being named for it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(field="out_dir", value=out_dir, rule="exists and is not a folder")
    if not overwrite and out_dir.is_dir():
        found = [n for n in names if (out_dir / n).exists()]
        if (out_dir / PLOT_DIR).is_dir() and any((out_dir / PLOT_DIR).iterdir()):
            found.append(f"{PLOT_DIR}/")
        if found:
            raise InputError(field="out_dir", value=out_dir, refs=("overwrite",),
                             rule=f"already holds a report ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}); "
                                  "add {overwrite} to replace it, or pick another folder")
    try:
        (out_dir / PLOT_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(field="out_dir", value=out_dir, rule=f"cannot create the folder: {exc.strerror}") from None


def write_bundle(obj: StudyReport | Comparison, out_dir: str | Path, doc: Document | None = None,
                 overwrite: bool = False) -> Bundle:
    """Write the report bundle for a study report or a comparison into `out_dir`; `doc` is the
    document of `obj` when the caller has built it already. A folder holding an earlier bundle is
    refused (InputError) unless `overwrite`; a write error (read-only or full disk) is an InputError."""
    root = Path(out_dir)
    try:
        return _write_bundle(obj, root, doc, overwrite)
    except OSError as exc:
        where = exc.filename or root
        raise InputError(field="out_dir", value=root, rule=f"cannot write {str(where)!r}: {exc.strerror or exc}") from None


def _write_bundle(obj: StudyReport | Comparison, root: Path, doc: Document | None, overwrite: bool) -> Bundle:
    start = time.perf_counter()
    doc = doc if doc is not None else document_for(obj)
    _prepare(root, ["index.html", "report.md", "report.json", *[f"{s.key}.csv" for s in doc.sections]], overwrite)
    plots = list(plots_for(obj, root / PLOT_DIR))
    made = {p.key for p in plots}
    for stale in KNOWN_PLOTS:  # plots an earlier report left here that this one does not have
        if stale not in made:
            for ext in ("png", "svg"):
                (root / PLOT_DIR / f"{stale}.{ext}").unlink(missing_ok=True)
    written: list[Path] = []
    for p in plots:
        written += [p.png, p.svg]

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    files: list[tuple[str, str]] = []
    for s in doc.sections:
        path = root / f"{s.key}.csv"
        atomic_write_text(path, raw_frame(doc, s.key).to_csv(index=False, lineterminator="\n"))
        written.append(path)
        files.append((rel(path), s.title))
    md = root / "report.md"
    atomic_write_text(md, to_markdown(doc, [(p.title, rel(p.png)) for p in plots]))
    js = root / "report.json"
    atomic_write_text(js, to_json(doc))
    written += [md, js]
    files = [(rel(md), "the tables in Markdown"), (rel(js), "everything, machine-readable")] + files
    figures = [Figure(key=p.key, title=p.title, src=rel(p.png), caption=p.caption, wide=p.wide,
                      links=(("PNG", rel(p.png)), ("SVG", rel(p.svg)))) for p in plots]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    index = root / "index.html"
    atomic_write_text(index, to_html(doc, figures, files, generated=stamp))
    written.insert(0, index)
    return Bundle(root=root, index=index, files=tuple(written), plots=tuple(plots),
                  seconds=time.perf_counter() - start)
