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

from typing import Any, Sequence

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

TABLE_WIDTH = 80


def table_width(console: Console) -> int:
    """The width a table may take on `console`: a terminal's own width (at least TABLE_WIDTH), and
    TABLE_WIDTH for a pipe or a file (CI logs)."""
    return max(TABLE_WIDTH, console.width) if console.is_terminal else TABLE_WIDTH


def natural_width(console: Console, table: RenderableType) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def _spans(console: Console, table: Table) -> tuple[list[tuple[int, int, int]], int]:
    """Each column's (widest, least, widest cell) width, and what the frame and padding add: the least
    is its `min_width` (a figure's width) or its longest word (rich's own minimum ignores both)."""
    options = console.options.update_width(10_000)

    def widths(column: Any) -> tuple[int, int, int]:
        head = Measurement.get(console, options, column.header)
        cells = [Measurement.get(console, options, c) for c in column._cells]
        widest_cell = max((m.maximum for m in cells), default=0)
        widest = max(head.maximum, widest_cell)
        least = widest if column.no_wrap else max(column.min_width or 0, head.minimum, *(m.minimum for m in cells))
        return widest, least, widest_cell

    spans = [widths(c) for c in table.columns]
    return spans, natural_width(console, table) - sum(w for w, _, _ in spans)


def minimum_width(console: Console, table: Table) -> int:
    """The narrowest `table` can print without cutting a figure or breaking a word."""
    spans, overhead = _spans(console, table)
    return overhead + sum(least for _, least, _ in spans)


def _set_widths(console: Console, table: Table, width: int) -> None:
    """Fixed column widths that fit `width`: the widest columns give up space first, none below its
    least (rich's own shrinking is proportional and would cut figures)."""
    spans, overhead = _spans(console, table)
    widths = [w for w, _, _ in spans]
    while sum(widths) + overhead > width:
        # wrap headers first (a header wider than its cells), then cells, the widest column first
        heads = [i for i, (w, (_, least, cell)) in enumerate(zip(widths, spans)) if w > max(least, cell)]
        cells = [i for i, (w, (_, least, _)) in enumerate(zip(widths, spans)) if w > least]
        pick = heads or cells
        if not pick:
            return
        widths[max(pick, key=lambda i: widths[i])] -= 1
    for column, w in zip(table.columns, widths):
        column.width = w


def fit_table(console: Console, table: Table, width: int, optional: Sequence[str] = (),
              elsewhere: str = "", whole: Sequence[str] = ()) -> Table:
    """Make `table` fit `width` columns without cutting a figure or a word: compact (a lighter frame,
    then one space between columns), then wrap headers and text, then drop `optional` columns (by
    header, the last named first), else print it vertically. Returns the table to print."""
    options = console.options.update_width(10_000)
    for column in table.columns:
        column.overflow = "fold"  # text wraps, never ends in an ellipsis
        if column.justify == "right" or str(column.header) in whole:  # figures and names stay on one line
            # (a header may still wrap at its words)
            column.min_width = max([column.min_width or 0]
                                   + [Measurement.get(console, options, c).maximum for c in column._cells])
    if natural_width(console, table) <= width:
        return table
    table.box = box.SIMPLE_HEAD
    table.padding = (0, 0, 0, 1)  # a space before each cell: two between columns with the frame's
    table.show_edge = False
    table.collapse_padding = False  # rich measures collapsed edge padding unlike how it draws it
    if minimum_width(console, table) > width:
        table.padding = (0, 0)  # one space between columns (the frame's) instead of two
    dropped: list[str] = []
    for name in reversed(list(optional)):
        if minimum_width(console, table) <= width:  # wrapping text and headers is enough
            break
        at = next((i for i, c in enumerate(table.columns) if str(c.header) == name), None)
        if at is not None:
            table.columns.pop(at)
            dropped.append(name)
    if dropped:
        note = f"not shown to fit {width} columns: {', '.join(reversed(dropped))}" + (f" (see {elsewhere})" if elsewhere else "")
        table.caption = f"{table.caption}; {note}" if table.caption else note
    if minimum_width(console, table) > width:
        return vertical(table)
    _set_widths(console, table, width)
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
                elsewhere: str = "", whole: Sequence[str] = ()) -> None:
    """Print a renderable; a Table is fitted first (see `fit_table`)."""
    width = table_width(console)
    # a console of the table's width that wraps (a soft-wrapping console would measure every cell
    # unwrapped; rich never prints wider than its console, and a pipe's default is 80)
    # (of the same class: a SafeConsole keeps escaping control characters)
    console = type(console)(file=console.file, width=width, markup=False, emoji=False, highlight=False,
                            force_terminal=console.is_terminal, no_color=console.no_color)
    if isinstance(table, Text) and not table.no_wrap:
        # a line of text wraps at spaces only: rich folds a word longer than the line (a path, a
        # study name) mid-word, which would cut a name the user must copy
        for paragraph in table.plain.split("\n"):
            for line in _wrap_words(paragraph, width):
                console.print(Text(line, style=table.style), soft_wrap=True)
        return
    if isinstance(table, Table):
        table = fit_table(console, table, width, optional, elsewhere, whole)
    console.print(table)


def _wrap_words(text: str, width: int, indent: str = "  ") -> list[str]:
    """`text` wrapped at spaces to `width` (later lines indented); a word longer than the line is
    kept whole on a line of its own."""
    import textwrap

    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) or [""]


def print_wrapped(console: Console, text: str, indent: str = "  ") -> None:
    """A long line of prose wrapped at words to the table width (later lines indented), printed
    literally."""
    for line in _wrap_words(text, table_width(console), indent):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
