"""Tables for people: every table printed by a command fits `TABLE_WIDTH` columns (or the terminal,
when that is wider), and no figure is ever cut.

A table that is naturally too wide is first made compact (a lighter frame, one space of padding);
if it still does not fit, its optional columns (named by the caller, least important last) are left
out, and its caption says which and where to find them (`--json`, or the report's CSV/HTML). Cells
fold rather than end in an ellipsis, so what is shown is always whole.
"""

from __future__ import annotations

from typing import Sequence

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table

TABLE_WIDTH = 100


def table_width(console: Console) -> int:
    """The width a table may take on `console`: a terminal's own width (at least TABLE_WIDTH), and
    TABLE_WIDTH for a pipe or a file (CI logs)."""
    return max(TABLE_WIDTH, console.width) if console.is_terminal else TABLE_WIDTH


def natural_width(console: Console, table: RenderableType) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def fit_table(console: Console, table: Table, width: int, optional: Sequence[str] = (),
              elsewhere: str = "--json") -> Table:
    """Make `table` fit `width` columns: compact first, then drop `optional` columns (by header, the
    last named first). Returns the same table."""
    for column in table.columns:
        column.overflow = "fold"  # text wraps, never ends in an ellipsis
        if column.justify == "right":  # figures: never split across lines (rich shrinks the text instead)
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
    return table


def print_table(console: Console, table: RenderableType, optional: Sequence[str] = (),
                elsewhere: str = "--json") -> None:
    """Print a renderable; a Table is fitted first (see `fit_table`)."""
    width = table_width(console)
    if isinstance(table, Table):
        fit_table(console, table, width, optional, elsewhere)
    if console.width < width:  # rich never prints wider than its console: a pipe's default is 80
        console = type(console)(file=console.file, width=width, markup=False, emoji=False, highlight=False,
                          force_terminal=console.is_terminal)
    console.print(table)
