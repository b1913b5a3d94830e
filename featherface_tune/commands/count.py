"""`featherface-tune count`: exact parameters and MACs of a config, with optional cross-checks."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, InputSizeOpt, JsonOpt, PresetOpt, SetOpt, err, fail, handle_errors, input_size, out,
    print_json, resolve,
)


@handle_errors
def count_cmd(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    size: InputSizeOpt = (640, 640),
    check: Annotated[bool, typer.Option("--check", help="Also build the model and cross-check against numel(), fvcore and torch's flop counter.")] = False,
    dcn_macs: Annotated[str, typer.Option("--dcn-macs", help="'dense': a deformable conv counts as the dense conv of its shape, offset/modulator convs listed apart (the published figures); 'full': offset/modulator convs in the total.")] = "dense",
    json_: JsonOpt = False,
) -> None:
    """Count a FeatherFace config's parameters and multiply-adds exactly, without building it.

    The config comes from --preset, then --config, then --set overrides (default: the official
    FeatherFace). Shows the per-module breakdown; --check builds the model and proves the figures.
    """
    from featherface_tune.counter.analytic import count
    from featherface_tune.reports.tables import count_table

    cfg = resolve(preset, config, set_)
    h, w = input_size(size)
    result = count(cfg, h, w, dcn_macs=dcn_macs)
    data = result.to_json()
    checked = None
    if check:
        from featherface_tune.counter.crosscheck import check as run_check

        with err.status("building the model and running fvcore..."):
            checked = run_check(cfg, h, w, dcn_macs=dcn_macs)
        data["check"] = checked.to_json()
    if json_:
        data["config"] = cfg.to_dict()
        print_json(data)
    else:
        out.print(count_table(result, title=preset or "config"))
        if checked is not None:
            from featherface_tune.counter.crosscheck import TORCH_FLOP_CONVENTION

            out.print(f"numel(): {checked.numel_params:,} params; fvcore: {checked.fvcore_macs:,} MACs; "
                      f"{TORCH_FLOP_CONVENTION}: {checked.torch_flops:,}")
    if checked is not None and not checked.ok:
        raise fail("cross-check failed: " + "; ".join(checked.mismatches()), 1)
    if checked is not None and not json_:
        err.print("[green]cross-check passed[/]: analytic == numel() and == fvcore, per module")
