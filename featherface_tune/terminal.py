"""Tables for people: every table printed by a command fits `TABLE_WIDTH` columns (or the terminal,
when that is wider), and no figure is ever cut.

A table that is naturally too wide is first made compact (a lighter frame, one space of padding);
if it still does not fit, its optional columns (named by the caller, least important last) are left
out, and its caption says which and where to find them (`--json`, or the report's CSV/HTML). Cells
fold rather than end in an ellipsis, so what is shown is always whole; columns named `whole` (names a
user copies) never break, and when even that cannot fit, the table is printed vertically: one block
of `column  value` lines per row.
"""

from __future__ import annotations

from typing import Sequence

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table

TABLE_WIDTH = 80


def table_width(console: Console) -> int:
    """The width a table may take on `console`: a terminal's own width (at least TABLE_WIDTH), and
    TABLE_WIDTH for a pipe or a file (CI logs)."""
    return max(TABLE_WIDTH, console.width) if console.is_terminal else TABLE_WIDTH


def natural_width(console: Console, table: RenderableType) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def minimum_width(console: Console, table: RenderableType) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).minimum


def fit_table(console: Console, table: Table, width: int, optional: Sequence[str] = (),
              elsewhere: str = "--json", whole: Sequence[str] = ()) -> Table:
    """Make `table` fit `width` columns: compact first, then drop `optional` columns (by header, the
    last named first), then print it vertically. Returns the table to print."""
    for column in table.columns:
        column.overflow = "fold"  # text wraps, never ends in an ellipsis
        if column.justify == "right" or str(column.header) in whole:  # figures and names stay on one line
            column.no_wrap = True
    if natural_width(console, table) <= width:
        return table
    table.box = box.SIMPLE_HEAD
    table.padding = (0, 1)
    table.show_edge = False
    table.collapse_padding = True
    dropped: list[str] = []
    for name in reversed(list(optional)):
        if natural_width(console, table) <= width:
            break
        at = next((i for i, c in enumerate(table.columns) if str(c.header) == name), None)
        if at is not None:
            table.columns.pop(at)
            dropped.append(name)
    if dropped:
        note = f"not shown to fit {width} columns: {', '.join(reversed(dropped))} (see {elsewhere})"
        table.caption = f"{table.caption}; {note}" if table.caption else note
    if minimum_width(console, table) > width:
        return vertical(table)
    return table


def vertical(table: Table) -> Table:
    """`table` as blocks of `column  value` lines, one block per row: fits any width a value fits."""
    out = Table(title=table.title, caption=table.caption, title_justify=table.title_justify,
                box=box.SIMPLE_HEAD, show_header=False, show_edge=False, padding=(0, 1))
    out.add_column("column", style="dim", no_wrap=True)
    out.add_column("value", overflow="fold")
    rows = max((len(c._cells) for c in table.columns), default=0)
    for i in range(rows):
        for column in table.columns:
            cells = column._cells
            out.add_row(str(column.header), cells[i] if i < len(cells) else "", end_section=column is table.columns[-1])
    return out


def print_table(console: Console, table: RenderableType, optional: Sequence[str] = (),
                elsewhere: str = "--json", whole: Sequence[str] = ()) -> None:
    """Print a renderable; a Table is fitted first (see `fit_table`)."""
    width = table_width(console)
    if isinstance(table, Table):
        table = fit_table(console, table, width, optional, elsewhere, whole)
    if console.width < width:  # rich never prints wider than its console: a pipe's default is 80
        console = Console(file=console.file, width=width, markup=False, emoji=False, highlight=False,
                          force_terminal=console.is_terminal)
    console.print(table, soft_wrap=False)  # captions wrap at the table's width


def print_wrapped(console: Console, text: str, indent: str = "  ") -> None:
    """A long line of prose wrapped at words to the table width (later lines indented), printed
    literally."""
    import textwrap

    lines = textwrap.wrap(text, table_width(console), subsequent_indent=indent, break_long_words=False,
                          break_on_hyphens=False) or [""]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
