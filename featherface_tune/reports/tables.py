"""Rich tables for counts, and configs in short columns (presentation only; the numbers come from
`featherface_tune.counter`)."""

from __future__ import annotations

from typing import Any, Mapping

from rich.table import Table
from rich.text import Text

from featherface_tune.counter.analytic import CountResult
from featherface_tune.counter.conventions import TRUE


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def count_table(result: CountResult, title: str = "") -> Table:
    h, w = result.input_size
    counting = result.counting
    caption = (f"MACs at {h}x{w}, fvcore convention, DCN MACs: {counting.dcn_macs}" if counting.name == TRUE.name
               else f"{counting.unit} at {h}x{w}, {counting.name} convention")
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


# ---- configs in a few short columns (search results, report tables) --------------------------------

# short column -> the config fields it shows
CONFIG_COLUMNS: dict[str, tuple[str, ...]] = {
    "neck": ("neck", "bifpn_repeats"),
    "ch": ("neck_channels",),
    "SSH P3/4/5": ("ssh_channels",),
    "CBAM b/n": ("backbone_cbam", "neck_cbam", "backbone_cbam_reduction", "neck_cbam_reduction"),
    "DCN": ("ssh_deformable",),
    "shuffle": ("shuffle", "shuffle_groups"),
}


def ssh_levels(c: Mapping[str, Any]) -> list[int]:
    s = c["ssh_channels"]
    return [int(x) for x in s] if isinstance(s, (list, tuple)) else [int(s)] * 3


def config_cells(c: Mapping[str, Any]) -> dict[str, str]:
    """A config's short columns: `bifpn x3` (an FPN neck has no repeats), `42`, `56/72/72` (SSH per
    level), `16/8` (CBAM reduction ratios, backbone/neck, `off` where off), `on`, `block`."""
    neck = f"bifpn x{c['bifpn_repeats']}" if c["neck"] == "bifpn" else "fpn"
    cbam = "/".join(str(c[k]) if c[f] else "off" for f, k in (("backbone_cbam", "backbone_cbam_reduction"),
                                                               ("neck_cbam", "neck_cbam_reduction")))
    return {"neck": neck, "ch": str(c["neck_channels"]), "SSH P3/4/5": "/".join(map(str, ssh_levels(c))),
            "CBAM b/n": cbam, "DCN": "on" if c["ssh_deformable"] else "off", "shuffle": str(c["shuffle"])}


def describe_config(c: Mapping[str, Any]) -> str:
    """A config in one phrase, e.g. `BiFPN x3 42, SSH 56/72/72, CBAM 16/8, DCN on, block shuffle`."""
    cells = config_cells(c)
    neck = f"BiFPN x{c['bifpn_repeats']}" if c["neck"] == "bifpn" else "FPN"
    return (f"{neck} {cells['ch']}, SSH {cells['SSH P3/4/5']}, CBAM {cells['CBAM b/n']}, DCN {cells['DCN']}, "
            f"{cells['shuffle']} shuffle")
