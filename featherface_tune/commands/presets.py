"""`featherface-tune presets`: list the named presets with their exact counts."""

from __future__ import annotations

from rich.table import Table

from featherface_tune.commands._common import JsonOpt, handle_errors, out, print_json


@handle_errors
def presets_cmd(json_: JsonOpt = False) -> None:
    """List the built-in presets with parameters and MACs at 640x640."""
    from featherface_tune.counter.analytic import count
    from featherface_tune.models.presets import get_preset, preset_doc, preset_names

    rows = []
    for name in preset_names():
        r = count(get_preset(name))
        rows.append({"name": name, "params": r.params, "macs": r.macs, "description": preset_doc(name)})
    if json_:
        print_json(rows)
        return
    t = Table(title="presets")
    for col in ("name", "params", "MACs @640", "description"):
        t.add_column(col, justify="right" if col in ("params", "MACs @640") else "left")
    for r in rows:
        t.add_row(r["name"], f"{r['params']:,}", f"{r['macs']:,}", r["description"])
    out.print(t)
