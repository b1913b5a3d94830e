"""Render report data as rich tables, Markdown, CSV, JSON or HTML.

The DataFrames from `featherface_tune.reports.data` hold raw numbers; this module formats them for
people (thousands separators, signed deltas, percentages) in the human formats (terminal, Markdown,
HTML) and leaves them raw in the machine formats (CSV, JSON).
"""

from __future__ import annotations

import html
import json
import math
import string
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from featherface_tune.counter.conventions import TRUE
from featherface_tune.escaping import printable
from featherface_tune.models.config import FIELD_NAMES
from featherface_tune.tuner.records import window_text
from featherface_tune.reports.data import (
    METRICS, OBJECTIVE_ATTRS, Comparison, StudyReport, _fmt_field, value_column,
)

FORMATS = ("table", "md", "csv", "json", "html")

# Column headers shown to people (machine formats keep the raw names).
HEADERS: dict[str, str] = {
    "macs": "MACs", "params_pct": "% params", "macs_pct": "% MACs", "latency_ms": "latency (ms)",
    "proxy_ap": "proxy AP", "share_pct": "share", "delta": "delta",
    "fail_reason": "fail reason", "pareto": "Pareto", "share of delta params %": "share of delta params",
}


@dataclass(frozen=True)
class Section:
    """One titled table of a report."""

    key: str  # file-safe id: the CSV name in a bundle, the anchor in HTML
    title: str
    frame: pd.DataFrame = field(hash=False)
    note: str = ""
    long: bool = False  # long tables: left out of the terminal and Markdown, folded in HTML
    raw: pd.DataFrame | None = field(default=None, hash=False)  # what CSV gets, if not `frame`


@dataclass(frozen=True)
class Document:
    """A whole report: title, header lines, sections, and the raw JSON form."""

    kind: str  # "study" or "compare"
    title: str
    lines: tuple[str, ...]
    sections: tuple[Section, ...]
    data: Mapping[str, Any] = field(hash=False)
    primary: str = ""  # the key of the section the CSV format writes
    warnings: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict, hash=False)  # config fields every trial shares

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)


# ---- cell formatting -----------------------------------------------------------------------------

def _missing(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    return isinstance(v, float) and math.isnan(v)


def _is_count_column(name: str) -> bool:
    low = name.lower()
    return any(k in low for k in ("params", "macs", "delta", "trials", "trial", "target", "tolerance"))


def format_cell(column: str, v: Any) -> str:
    """One value as people read it, chosen by the column's name and the value's type."""
    if _missing(v):
        return ""
    if column in FIELD_NAMES:  # config fields read as in a config file: true, [56, 72, 72]
        return _fmt_field(v)
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return _fmt_field(list(v))
    low = column.lower()
    if isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer()
                                             and _is_count_column(column) and not low.endswith(("%", "_pct"))):
        n = int(v)
        return f"{n:+,}" if "delta" in low and "%" not in low and n else f"{n:,}"
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if low.endswith(("_pct", "%")) or low == "share_pct":
            return f"{x:.1f}%"
        if low == "latency_ms" or low.endswith("latency_ms"):
            return f"{x:.2f}"
        if "proxy_ap" in low:
            return f"{x:.4f}"
        return f"{x:,.1f}" if abs(x) >= 1000 else f"{x:.4g}"
    return str(v)


def numeric_columns(frame: pd.DataFrame) -> set[str]:
    """Columns to right-align: numbers (bools excluded)."""
    out = set()
    for c in frame.columns:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s):
            continue
        if pd.api.types.is_numeric_dtype(s):
            out.add(c)
        elif s.dtype == object:
            vals = [v for v in s if not _missing(v)]
            if vals and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                            for v in vals):
                out.add(c)
    return out


def header(column: str) -> str:
    if column.startswith("value_"):
        return f"objective {column[len('value_'):]}"
    return HEADERS.get(column, column)


def display_rows(frame: pd.DataFrame) -> list[list[str]]:
    cols = list(frame.columns)
    return [[format_cell(c, v) for c, v in zip(cols, row)] for row in frame.itertuples(index=False, name=None)]


def human_frame(frame: pd.DataFrame, drop_empty: bool = True) -> pd.DataFrame:
    """Drop columns that are empty in every row (e.g. latency when it was never measured)."""
    if not drop_empty or frame.empty:
        return frame
    keep = [c for c in frame.columns if any(not _missing(v) for v in frame[c])]
    return frame[keep]


# ---- building documents --------------------------------------------------------------------------

def _kv_frame(items: Mapping[str, Any]) -> pd.DataFrame:
    rows = [{"item": k, "value": "" if _missing(v) else (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))}
            for k, v in items.items()]
    return pd.DataFrame(rows, columns=["item", "value"])


def _human_trials(report: StudyReport) -> pd.DataFrame:
    """All trials with the columns people need: metrics, varying fields, state, reason."""
    df = report.trials
    cols = ["trial", "state", "feasible", *[m for m in METRICS if m in df]]
    cols += [value_column(o) for o in report.record.objectives if o not in OBJECTIVE_ATTRS]
    cols += list(report.varying) + ["fail_reason"]
    return human_frame(df[[c for c in cols if c in df.columns]])


def study_document(report: StudyReport) -> Document:
    r = report.record
    objective = " then ".join(f"{o} ({'lower' if d == 'minimize' else 'higher'} is better)"
                              for o, d in zip(r.objectives, report.directions))
    c = report.counts
    budget = f"budget {'' if r.tolerance else 'exactly '}{window_text(r.target, r.tolerance)} params"
    lines = (
        f"study {report.name!r} in {report.storage}",
        budget + (f", MACs <= {r.max_macs:,}" if r.max_macs else "")
        + f"; MACs at {r.input_size[0]}x{r.input_size[1]}"
        + (f"; counted as {r.convention}" if r.counting.name != TRUE.name else ""),
        f"{c['trials']} trials: {c['feasible']} feasible, {c['infeasible']} infeasible, "
        f"{c['failed']} failed, {c['pruned']} pruned" + (f", {c['running']} running" if c["running"] else ""),
    )
    summary = dict(report.summary)
    summary.pop("fixed_fields", None)
    if summary.get("max_macs") is None:
        summary["max_macs"] = "none"
    sections = [
        Section("summary", "Study", _kv_frame(summary)),
        Section("outcomes", "Trial outcomes", report.counts_frame),
        Section("top", f"Top {len(report.top)} feasible configs" if len(report.top) else "Top feasible configs",
                human_frame(report.top),
                note=(("Pareto-optimal first, then " if report.multi_objective else "ranked by ")
                      + f"{objective}; ties by distance to the target, then trial number"
                      if not report.ranked.empty else "no feasible trial yet")),
    ]
    if report.ranked.empty and not report.closest.empty:
        sections.append(Section("closest", "Closest to the target (none feasible yet)",
                                human_frame(report.closest),
                                note="complete trials by distance to the target, then MACs"))
    if report.pareto is not None:
        n_front = len(report.pareto)
        sections.append(Section("pareto", f"Pareto front ({n_front} config{'s' if n_front != 1 else ''})",
                                human_frame(report.pareto),
                                note=" vs ".join(r.objectives) + ", feasible trials only"))
    if report.chosen is not None:
        b = report.chosen
        h, w = b.result.input_size
        sections.append(Section(
            "breakdown", f"Per-module breakdown of {b.label}", b.frame,
            note=f"recomputed by the analytic counter; MACs at {h}x{w}, fvcore convention, "
                 f"DCN MACs: {b.result.dcn_macs}"))
    if report.fixed:
        fixed = pd.DataFrame([{"field": k, "value": _fmt_field(v)} for k, v in report.fixed.items()],
                             columns=["field", "value"])
        sections.append(Section("fixed", "Fields every trial shares", fixed))
    if not report.failures.empty:
        sections.append(Section("failures", "Why trials failed", report.failures))
    sections.append(Section("trials", f"All {c['trials']} trials", _human_trials(report), long=True,
                            raw=report.trials_public))
    title = f"featherface-tune report: {report.name}"
    data = report.to_json()
    return Document(kind="study", title=title, lines=lines, sections=tuple(sections), data=data,
                    primary="trials", warnings=report.warnings, fixed=dict(report.fixed))


def compare_document(cmp: Comparison) -> Document:
    h, w = cmp.input_size
    base = cmp.entries[0]
    lines = [f"baseline {base.label}: {base.result.params:,} params, {base.result.macs:,} MACs at {h}x{w}"]
    for e in cmp.entries[1:]:
        dp, dm = e.result.params - base.result.params, e.result.macs - base.result.macs
        lines.append(f"{e.label}: {e.result.params:,} params ({dp:+,}), {e.result.macs:,} MACs ({dm:+,})")
    sections = (
        Section("fields", "Config fields that differ", cmp.fields,
                note="all other fields are equal"),
        Section("modules", "Per-module params and MACs", cmp.modules,
                note=f"deltas relative to {base.label}; MACs at {h}x{w}, fvcore convention, "
                     f"DCN MACs: {base.result.dcn_macs}"),
    )
    title = "featherface-tune compare: " + " vs ".join(cmp.labels)
    return Document(kind="compare", title=title, lines=tuple(lines), sections=sections,
                    data=cmp.to_json(), primary="modules")


# ---- formats -------------------------------------------------------------------------------------

def rich_table(section: Section) -> Table:
    frame = section.frame
    num = numeric_columns(frame)
    caption = Text(printable(section.note)) if section.note else None
    t = Table(title=section.title, caption=caption, title_justify="left")
    for c in frame.columns:
        t.add_column(header(c), justify="right" if c in num else "left", overflow="fold")
    for row in display_rows(frame):
        total = frame.columns[0] in ("module", "outcome") and row[0] == "total"
        if total:
            t.add_section()
        t.add_row(*[Text(cell, style="bold" if total else "") for cell in row])
    return t


def terminal_tables(doc: Document) -> list[Any]:
    """Renderables for the terminal: header lines, then every section that is not long."""
    # printable: a name in a line cannot start a line of its own (a forged `::error::` in a CI log)
    # printed wrapped at spaces only (terminal.print_table): a name or path longer than a line stays whole
    items: list[Any] = [Text(printable(doc.title), style="bold")]
    items += [Text(printable(line)) for line in doc.lines]
    for s in doc.sections:
        if s.long or s.key == "summary":
            continue
        if s.key == "fixed":
            pairs = ", ".join(f"{f}={v}" for f, v in zip(s.frame["field"], s.frame["value"]))
            items.append(Text(f"{s.title}: {pairs}", style="dim"))
            continue
        if s.frame.empty:
            items.append(Text(f"{s.title}: none" + (f" ({s.note})" if s.note else ""), style="dim"))
            continue
        if s.key in ("top", "pareto", "closest"):
            s = _short_config_columns(s, doc.fixed)
        if doc.kind == "compare" and s.key == "modules":
            items += [rich_table(part) for part in _by_metric(s)]
            continue
        items.append(rich_table(s))
    return items


def _short_config_columns(section: Section, fixed: Mapping[str, Any]) -> Section:
    """The config fields that differ between the rows as the search's short columns (neck, ch, SSH per
    level, CBAM, DCN, shuffle): every difference fits a terminal, and an FPN shows no BiFPN repeats."""
    from featherface_tune.reports.tables import CONFIG_COLUMNS, config_cells

    frame = section.frame
    fields = [c for c in frame.columns if c in FIELD_NAMES]
    shown = [col for col, sources in CONFIG_COLUMNS.items() if set(sources) & set(fields)]
    if not shown or any(f not in fixed and f not in fields for sources in CONFIG_COLUMNS.values() for f in sources):
        return section  # a config the short columns cannot describe: the fields as they are
    cells = [config_cells({**fixed, **{f: row[f] for f in fields}}) for _, row in frame.iterrows()]
    short = frame.drop(columns=[f for f in fields if any(f in CONFIG_COLUMNS[c] for c in shown)])
    for col in shown:
        short[col] = [c[col] for c in cells]
    return replace(section, frame=short)


def _by_metric(section: Section) -> list[Section]:
    """A comparison's module table as one table per metric (params, then MACs), headed by the configs'
    labels: two narrow tables instead of one too wide for a terminal."""
    frame = section.frame
    parts = []
    for metric in ("params", "MACs"):
        names = {"module": "module"}
        for c in frame.columns:
            if c.endswith(f" {metric}") and not c.startswith("delta "):
                names[c] = c[: -len(metric) - 1]  # the config's label
            elif c.startswith(f"delta {metric}"):
                names[c] = "delta" + c[len(f"delta {metric}"):]
            elif metric == "params" and c.startswith("share of delta"):
                names[c] = "share %"
        part = frame[list(names)].rename(columns=names)
        parts.append(Section(f"{section.key}-{metric.lower()}", f"Per-module {metric}", part,
                             note=section.note if metric == "MACs" else ""))
    return parts


def _md_escape(text: str) -> str:
    """Text for a Markdown cell or line: pipes and backslashes escaped, newlines flattened, and HTML
    (a `<script>` in a config file name or study name) turned into entities, which Markdown shows as
    text and never runs."""
    text = html.escape(text, quote=False)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return printable(text)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown pipe table (numbers right-aligned)."""
    if frame.empty:
        return "_none_"
    num = numeric_columns(frame)
    cols = list(frame.columns)
    lines = ["| " + " | ".join(_md_escape(header(c)) for c in cols) + " |",
             "| " + " | ".join("---:" if c in num else "---" for c in cols) + " |"]
    for row in display_rows(frame):
        lines.append("| " + " | ".join(_md_escape(cell) for cell in row) + " |")
    return "\n".join(lines)


def to_markdown(doc: Document, plots: Sequence[tuple[str, str]] = (), whole: str = "") -> str:
    """The report as Markdown; `plots` are (title, relative path) images to embed. A section too
    long for it names where its rows are: `whole` (the command layer's way to get them as CSV,
    e.g. its format option) or the CSV format (`key.csv` in a bundle)."""
    parts = [f"# {_md_escape(doc.title)}", ""]
    parts += [f"- {_md_escape(line)}" for line in doc.lines]
    for w in doc.warnings:
        parts.append(f"- **warning:** {_md_escape(w)}")
    for s in doc.sections:
        if s.key == "summary":
            continue
        parts += ["", f"## {_md_escape(s.title)}", ""]
        if s.long:
            where = f"see `{whole}`" if whole else "see the CSV format"
            parts.append(f"{len(s.frame)} rows: {where} (or `{s.key}.csv` in a bundle).")
            continue
        parts.append(markdown_table(s.frame))
        if s.note:
            parts += ["", f"_{_md_escape(s.note)}_"]
    if plots:
        parts += ["", "## Plots", ""]
        parts += [f"![{_md_escape(t)}]({p})" for t, p in plots]
    return "\n".join(parts) + "\n"


def to_csv(doc: Document, key: str | None = None) -> str:
    """One section (the document's primary one by default) as CSV with raw values."""
    frame = raw_frame(doc, key or doc.primary)
    return frame.to_csv(index=False, lineterminator="\n")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with a quote (OWASP's advice);
    numbers, and text that is a plain number such as "-12", stay as they are."""
    if not isinstance(value, str):
        return value
    value = printable(value, keep="\n\r\t")  # no ESC or bidi override for a terminal that shows the CSV
    if not value.startswith(FORMULA_PREFIXES):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def raw_frame(doc: Document, key: str) -> pd.DataFrame:
    """A section with machine-friendly values (the study's trials: every field of every trial), for
    CSV: text cells that a spreadsheet would run as formulas are quoted (`formula_safe`)."""
    s = doc.section(key)
    frame = s.raw if s.raw is not None else s.frame
    safe = frame.copy()
    for c in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[c]):
            safe[c] = safe[c].map(formula_safe)
    safe.columns = [formula_safe(c) for c in safe.columns]
    return safe


def to_json(doc: Document) -> str:
    return json.dumps(doc.data, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, (set, tuple)):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# ---- HTML ----------------------------------------------------------------------------------------

# the page's colours, named once (substituted into the style sheet: CSS custom properties would
# spell "--name", which the library keeps for command-line flags)
CSS_COLOURS = {"fg": "#1d2330", "muted": "#5b6474", "line": "#d9dee7", "head": "#f3f5f9", "accent": "#2f6fdf",
               "good": "#1a7f37", "bad": "#c0392b"}
CSS = string.Template("""
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: $fg;
       margin: 0; background: #fff; }
main { max-width: 1320px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 1.6rem; margin: 0 0 .4rem; }
h2 { font-size: 1.2rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid $line; }
p.lead { margin: .15rem 0; color: $muted; }
p.note { margin: .4rem 0 0; color: $muted; font-size: .88rem; }
.warn { background: #fff6e5; border: 1px solid #f0c36d; padding: .5rem .8rem; border-radius: 6px; margin: .8rem 0; }
nav { margin: 1rem 0 0; font-size: .9rem; }
nav a { color: $accent; text-decoration: none; margin-right: 1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; margin: .2rem 0; }
th, td { padding: .32rem .55rem; border-bottom: 1px solid $line; white-space: nowrap; text-align: left; }
th { background: $head; font-weight: 600; position: sticky; top: 0; white-space: normal;
     vertical-align: bottom; min-width: 3.5rem; }
td.num, th.num { text-align: right; }
tr.total td { font-weight: 700; border-top: 2px solid $fg; }
tbody tr:hover { background: #f8fafc; }
td.neg { color: $good; } td.pos { color: $bad; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 22px; }
figure { margin: 0; border: 1px solid $line; border-radius: 8px; padding: 10px; background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: .85rem; color: $muted; margin-top: .4rem; }
figcaption a { color: $accent; }
details summary { cursor: pointer; color: $accent; margin: .3rem 0; }
footer { margin-top: 3rem; color: $muted; font-size: .8rem; }
""").substitute(CSS_COLOURS)


@dataclass(frozen=True)
class Figure:
    """A plot as the HTML page shows it: an image inside the bundle plus links to its files."""

    key: str
    title: str
    src: str                      # relative path of the image the page shows
    links: tuple[tuple[str, str], ...] = ()  # (label, relative path)
    caption: str = ""
    wide: bool = False


def _html(text: str) -> str:
    """Text for HTML: entities for markup, Python escapes for control characters (`printable`)."""
    return html.escape(printable(text))


def html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return '<p class="note">none</p>'
    num = numeric_columns(frame)
    cols = list(frame.columns)

    def th(c: str) -> str:  # long field names may break after an underscore
        text = _html(header(c)).replace("_", "_<wbr>")
        return f'<th class="num">{text}</th>' if c in num else f"<th>{text}</th>"

    head = "".join(th(c) for c in cols)
    body = []
    for raw, row in zip(frame.itertuples(index=False, name=None), display_rows(frame)):
        total = cols[0] in ("module", "outcome") and row[0] == "total"
        cells = []
        for c, v, text in zip(cols, raw, row):
            cls = []
            if c in num:
                cls.append("num")
                if c.lower().startswith("delta ") and not _missing(v) and "%" not in c:
                    cls.append("neg" if v < 0 else "pos" if v > 0 else "")
            attr = f' class="{" ".join(x for x in cls if x)}"' if cls else ""
            cells.append(f"<td{attr}>{_html(text)}</td>")
        tr = '<tr class="total">' if total else "<tr>"
        body.append(tr + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table><thead><tr>' + head + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table></div>")


def to_html(doc: Document, figures: Sequence[Figure] = (), files: Sequence[tuple[str, str]] = (),
            generated: str = "") -> str:
    """A standalone HTML page (inline CSS, no scripts); images and links are relative paths."""
    e = _html
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(doc.title)}</title>", f"<style>{CSS}</style></head><body><main>",
             f"<h1>{e(doc.title)}</h1>"]
    parts += [f'<p class="lead">{e(line)}</p>' for line in doc.lines]
    for w in doc.warnings:
        parts.append(f'<div class="warn"><strong>warning:</strong> {e(w)}</div>')
    anchors = [(s.key, s.title) for s in doc.sections]
    if figures:
        anchors.insert(0, ("plots", "Plots"))
    parts.append("<nav>" + "".join(f'<a href="#{e(k)}">{e(t)}</a>' for k, t in anchors) + "</nav>")
    if figures:
        parts.append('<h2 id="plots">Plots</h2><div class="grid">')
        for f in figures:
            links = " · ".join(f'<a href="{e(p)}">{e(lab)}</a>' for lab, p in f.links)
            cap = e(f.caption) + (f" — {links}" if links else "")
            cls = ' class="wide"' if f.wide else ""
            parts.append(f'<figure id="fig-{e(f.key)}"{cls}><img src="{e(f.src)}" alt="{e(f.title)}">'
                         f"<figcaption><strong>{e(f.title)}</strong>. {cap}</figcaption></figure>")
        parts.append("</div>")
    for s in doc.sections:
        parts.append(f'<h2 id="{e(s.key)}">{e(s.title)}</h2>')
        table = html_table(s.frame)
        if s.long:
            table = f"<details><summary>show {len(s.frame)} rows</summary>{table}</details>"
        parts.append(table)
        if s.note:
            parts.append(f'<p class="note">{e(s.note)}</p>')
    if files:
        parts.append('<h2 id="files">Files</h2><ul>')
        parts += [f'<li><a href="{e(p)}">{e(p)}</a> — {e(d)}</li>' for p, d in files]
        parts.append("</ul>")
    foot = "made by featherface-tune report" + (f" · {e(generated)}" if generated else "")
    parts.append(f"<footer>{foot}</footer></main></body></html>")
    return "\n".join(parts) + "\n"


RENDERERS: dict[str, Callable[[Document], str]] = {
    "md": lambda d: to_markdown(d),
    "csv": lambda d: to_csv(d),
    "json": to_json,
    "html": lambda d: to_html(d),
}
