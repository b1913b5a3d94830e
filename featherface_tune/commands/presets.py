"""`featherface-tune presets`: list the named presets with their exact counts."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from featherface_tune.commands._common import JsonOpt, handle_errors, out, print_json


@handle_errors
def presets_cmd(json_: JsonOpt = False) -> None:
    """List the built-in presets with parameters and MACs at 640x640."""
    from featherface_tune.counter.analytic import count
    from featherface_tune.models.presets import get_preset, preset_doc, preset_names

    rows: list[dict[str, Any]] = []
    for name in preset_names():
        counted = count(get_preset(name))
        rows.append({"name": name, "params": counted.params, "macs": counted.macs, "description": preset_doc(name)})
    if json_:
        print_json(rows)
        return
    t = Table(title="presets")
    for col in ("name", "params", "MACs @640", "description"):
        t.add_column(col, justify="right" if col in ("params", "MACs @640") else "left")
    for row in rows:
        t.add_row(str(row["name"]), f"{row['params']:,}", f"{row['macs']:,}", str(row["description"]))
    from featherface_tune.terminal import print_table

    print_table(out, t, whole=("name",))  # a preset name is copied into --preset: never broken
