"""`featherface-tune count`: exact parameters and MACs of a config, with optional cross-checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, InputSizeOpt, JsonOpt, PresetOpt, SetOpt, err, fail, handle_errors, input_size, out,
    print_json, resolve, styled, warn,
)
from featherface_tune.models.config import DEFAULT_INPUT

if TYPE_CHECKING:
    from rich.console import RenderableType

    from featherface_tune.counter.analytic import CountResult
    from featherface_tune.counter.conventions import Figure
    from featherface_tune.models.config import FeatherFaceConfig


@handle_errors
def count_cmd(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    size: InputSizeOpt = DEFAULT_INPUT,
    check: Annotated[bool, typer.Option("--check", help="Also build the model and cross-check against numel(), fvcore and torch's flop counter.")] = False,
    dcn_macs: Annotated[Optional[str], typer.Option("--dcn-macs", metavar="full|dense", show_default=False, help="'full' (default): every convolution counts, the DCN offset/modulator convs too; 'dense': a deformable conv counts as the dense conv of its shape, offset/modulator convs listed apart (numel convention only). Default: as the --config file was counted ([counted] of a search export), else full.")] = None,
    convention: Annotated[Optional[str], typer.Option("--convention", show_default=False, help="Count as a tool does: numel (true parameters, fvcore MACs; the default), fvcore, fvcore-stock, thop (the paper's 0.49 M), torchinfo, ptflops, ptflops-aten, flops. See --conventions. Default: as the --config file was counted ([counted] of a search export), else numel.")] = None,
    conventions: Annotated[bool, typer.Option("--conventions", help="Reconciliation table: every convention's params and MACs for the config, the difference to the true count, and what each leaves out, per module.")] = False,
    json_: JsonOpt = False,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Report a checkpoint's learnable parameters (BatchNorm statistics excluded) and its inferred config as TOML; with --preset/--config, also check that it loads into that config.")] = None,
) -> None:
    """Count a FeatherFace config's parameters and multiply-adds exactly, without building it.

    The config comes from --preset, then --config, then --set overrides (default: the official
    FeatherFace). Shows the per-module breakdown; --check builds the model and proves the true
    figures; --convention restates them as a counting tool reports them.
    """
    if checkpoint is not None:
        return count_checkpoint(checkpoint, preset, config, set_, json_)
    from featherface_tune.counter.analytic import count
    from featherface_tune.counter.conventions import TRUE, get_convention
    from featherface_tune.reports.tables import count_table

    cfg = resolve(preset, config, set_)
    h, w = input_size(size)
    counted = counted_as(config) if config is not None else {}
    if convention is None and "convention" in counted and not json_:
        err.print(f"counted as {counted['convention']}, as the search that wrote {str(config)!r} counted it "
                  "(--convention numel: true parameters)", highlight=False)
    if conventions:
        return print_conventions(cfg, h, w, preset or "config", json_)
    counting = get_convention(convention or counted.get("convention", TRUE.name),
                              dcn_macs or counted.get("dcn_macs", "full"))
    result = count(cfg, h, w, convention=counting)
    data = result.to_json()
    checked = None
    if check:
        from featherface_tune.bounds import check_build_size
        from featherface_tune.counter.crosscheck import check as run_check

        check_build_size(h, w, f"--input-size {h} {w} with --check", cfg)

        with err.status("building the model and running fvcore..."):
            checked = run_check(cfg, h, w, dcn_macs=counting.dcn_macs)  # "full" but for numel's dense
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
        err.print(styled("cross-check passed:", "green", "analytic == numel() and == fvcore, per module"))


def counted_as(path: Path) -> dict[str, str]:
    """How a config file's figures were counted: the `[counted]` table a search export writes
    (`convention`, `dcn_macs`), or {} (other files, JSON, a file that cannot be read: resolving the
    config reports that)."""
    if path.suffix.lower() != ".toml":
        return {}
    from featherface_tune.errors import FeatherFaceError
    from featherface_tune.textfile import parse_toml, read_text

    try:
        table = parse_toml(read_text(path, "config file"), f"config file {str(path)!r}").get("counted", {})
    except FeatherFaceError:
        return {}
    return {k: str(v) for k, v in table.items() if k in ("convention", "dcn_macs")} if isinstance(table, dict) else {}


def print_conventions(cfg: "FeatherFaceConfig", h: int, w: int, title: str, json_: bool) -> None:
    """`count --conventions`: every convention side by side, and what each leaves out per module."""
    from featherface_tune.counter.conventions import reconcile, reconcile_json

    if json_:
        data = reconcile_json(cfg, h, w)
        data["config"] = cfg.to_dict()
        print_json(data)
        return
    from featherface_tune.counter.analytic import count

    from featherface_tune.terminal import print_table

    for table in conventions_tables(reconcile(cfg, h, w), count(cfg, h, w), title):
        print_table(out, table, whole=("convention", "module"))


def conventions_tables(figures: Sequence["Figure"], true: "CountResult", title: str = "") -> list["RenderableType"]:
    """Rich renderables of the reconciliation (figures from `counter.conventions.reconcile`)."""
    import textwrap

    from rich.table import Table
    from rich.text import Text

    from featherface_tune.terminal import TABLE_WIDTH

    h, w = true.input_size
    t = Table(title=f"{title}: counting conventions at {h}x{w}" if title else None, title_justify="left",
              caption=f"true count: {true.params:,} params, {true.macs:,} MACs (every convolution)")
    for col in ("convention", "params", "Δ params", "MACs / FLOPs", "Δ", "unit"):
        t.add_column(col, justify="left" if col in ("convention", "unit") else "right")
    for f in figures:
        if f.error is not None:
            t.add_row(f.name, "-", "-", "-", "-", "cannot count")
            continue
        t.add_row(f.name, f"{f.params:,}", f"{f.params_delta:+,}", f"{f.macs:,}", f"{f.macs_delta:+,}", f.unit)
    d = Table(title="what each convention leaves out or counts differently, per module", title_justify="left")
    for col in ("convention", "op: why", "module", "Δ params", "Δ MACs"):
        d.add_column(col, justify="right" if col.startswith("Δ") else "left",
                     ratio=1 if col == "op: why" else None)
    for f in figures:
        for diff in f.differences:
            for i, (module, (dp, dm)) in enumerate(diff.modules.items()):
                d.add_row(f.name if i == 0 else "", f"{diff.what}: {diff.why}" if i == 0 else "", module,
                          f"{dp:+,}" if dp else "", f"{dm:+,}" if dm else "")
            d.add_section()
    rules = Text()
    for f in figures:
        line = f"{f.name}: {f.summary}" + (f" ({f.error})" if f.error else "")
        rules.append(textwrap.fill(line, TABLE_WIDTH, subsequent_indent="    ", break_on_hyphens=False) + "\n")
    return [t, d, rules]


def count_checkpoint(path: Path, preset: Optional[str], config: Optional[Path],
                     sets: Optional[list[str]], json_: bool) -> None:
    """`count --checkpoint`: learnable parameters of a checkpoint and its inferred config as TOML
    (stdout is valid TOML: the figures are comments). With --preset/--config the checkpoint must load
    into that config strictly; --set alone applies on top of the inferred config."""
    from featherface_tune.counter.analytic import count
    from featherface_tune.errors import ConfigError, InputError
    from featherface_tune.models.checkpoint import infer_config, load_model, read_checkpoint
    from featherface_tune.models.config import apply_overrides, to_toml

    ck = read_checkpoint(path)
    params = ck.learnable_params
    cfg, why = None, ""
    if preset is not None or config is not None:
        cfg = resolve(preset, config, sets)
        load_model(ck, cfg)  # strict: raises with the fields to change
    else:
        try:
            cfg = apply_overrides(infer_config(ck.state_dict), sets or [], "--set")
            load_model(ck, cfg)
        except (InputError, ConfigError) as exc:
            cfg, why = None, str(exc)
    analytic = count(cfg).params if cfg is not None else None
    if json_:
        print_json({"checkpoint": str(path), "params": params, "tensors": len(ck.state_dict),
                    "wrapper": ck.wrapper, "stripped_prefix": ck.stripped_prefix,
                    "config": cfg.to_dict() if cfg is not None else None,
                    "config_error": why or None, "analytic_params": analytic})
        return
    header = [f"# checkpoint: {path}",
              f"# learnable parameters: {params:,} ({len(ck.state_dict)} tensors; BatchNorm running "
              "statistics and counters excluded)"]
    if cfg is None:
        out.print("\n".join(header), highlight=False, markup=False)
        warn(f"no config inferred: {why}")
        return
    source = "given" if (preset is not None or config is not None) else "inferred from the checkpoint"
    header.append(f"# config {source}; analytic count {analytic:,}"
                  + (" (matches)" if analytic == params else " (DIFFERS)"))
    out.print(to_toml(cfg, header="\n".join(header)).rstrip("\n"), highlight=False, markup=False)
