"""Rich tables for counts (presentation only; the numbers come from `featherface_tune.counter`)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from featherface_tune.counter.analytic import CountResult


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def count_table(result: CountResult, title: str = "") -> Table:
    h, w = result.input_size
    caption = (f"MACs at {h}x{w}, fvcore convention, DCN MACs: {result.dcn_macs}" if result.convention == "numel"
               else f"{'FLOPs' if result.convention == 'flops' else 'MACs'} at {h}x{w}, {result.convention} convention")
    t = Table(title=title or None, caption=caption)
    t.add_column("module")
    t.add_column("params", justify="right")
    t.add_column("% params", justify="right")
    t.add_column("MACs", justify="right")
    t.add_column("% MACs", justify="right")
    for name, c in result.modules.items():
        t.add_row(name, f"{c.params:,}", _pct(c.params, result.params), f"{c.macs:,}", _pct(c.macs, result.macs))
    t.add_section()
    t.add_row(Text("total", "bold"), Text(f"{result.params:,}", "bold"), "100.0%", Text(f"{result.macs:,}", "bold"), "100.0%")
    if result.dcn_offset_macs or result.dcn_sampling_macs:
        t.add_section()
        inside = "in total" if result.dcn_macs == "full" else "not in total"
        t.add_row(f"DCN offset+modulator convs ({inside})", "", "", f"{result.dcn_offset_macs:,}", "")
        t.add_row("DCN bilinear sampling (not in total)", "", "", f"{result.dcn_sampling_macs:,}", "")
    return t
