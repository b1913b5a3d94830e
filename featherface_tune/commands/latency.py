"""`featherface-tune latency` (one config: predicted and measured forward time) and
`featherface-tune latency-table` (build the per-block latency table ahead of time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, InputSizeOpt, JsonOpt, PresetOpt, SetOpt, err, handle_errors, input_size, out, print_json, resolve,
)
from featherface_tune.models.config import DEFAULT_INPUT

RuntimeOpt = Annotated[Optional[str], typer.Option("--runtime", help="onnxruntime (default when the deploy extra is installed) or torch.")]
LatThreadsOpt = Annotated[int, typer.Option("--threads", help="Intra-op CPU threads of the timed runtime.")]
BlockSecondsOpt = Annotated[float, typer.Option("--block-seconds", help="Time cap of one block's timing while the table is built (longer: steadier figures).")]
ValidateOpt = Annotated[int, typer.Option("--validate", help="Whole configs timed to fit the overhead and check the model (first build).")]


def _progress() -> tuple[Any, Callable[[str, int, int], None]]:
    """A rich progress bar on stderr and the (what, done, total) callback that drives it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    task = bar.add_task("latency table", total=None)

    def update(what: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, description=what, completed=done, total=total)

    return bar, update


def _check_build_options(validate: int, block_seconds: float) -> None:
    from featherface_tune.errors import InputError

    if validate < 0:
        raise InputError(f"--validate {validate}: must not be negative")
    if not 0 < block_seconds <= 60:
        raise InputError(f"--block-seconds {block_seconds}: give seconds, more than 0 and at most 60")


def _note(text: str) -> None:
    err.print(text, highlight=False, soft_wrap=True)


@handle_errors
def latency_cmd(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    runtime: RuntimeOpt = None,
    threads: LatThreadsOpt = 1,
    size: InputSizeOpt = DEFAULT_INPUT,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="Only the prediction: do not time the whole model.")] = False,
    validate: ValidateOpt = 5,
    block_seconds: BlockSecondsOpt = 1.0,
    json_: JsonOpt = False,
) -> None:
    """Forward time (batch 1, CPU) of one config: predicted from the per-block latency table (built in
    the user's cache on first use) and, unless --no-measure, measured whole with its 95 % interval.
    See docs/deploy.md.
    """
    from featherface_tune.bounds import check_build_size
    from featherface_tune.deploy.latency_table import latency
    from featherface_tune.errors import InputError

    h, w = input_size(size)
    check_build_size(h, w, f"--input-size {h} {w}")
    if threads < 1:
        raise InputError(f"--threads {threads}: must be at least 1")
    _check_build_options(validate, block_seconds)
    cfg = resolve(preset, config, set_)
    bar, update = _progress()
    try:
        est = latency(cfg, runtime=runtime, threads=threads, input_size=(h, w), measure=not no_measure,
                      validate=validate, block_seconds=block_seconds, note=_note, progress=update)
    finally:
        bar.stop()
    data = est.to_json()
    if json_:
        print_json(data)
        return
    from rich.table import Table

    t = Table(title=f"latency at {h}x{w}: {est.runtime}, {est.threads} thread(s), batch 1",
              caption=f"table {data['table']['key']}: median abs error {data['table']['median_abs_pct_error']} %, "
                      f"Kendall tau {data['table']['kendall_tau']} ({data['table']['configs']} whole configs)")
    t.add_column("")
    t.add_column("ms", justify="right")
    t.add_column("95 % interval", justify="right")
    t.add_row("predicted", f"{est.predicted_ms:.2f}", "")
    if est.measured is not None:
        lo, hi = est.measured.ci_ms
        t.add_row("measured", f"{est.measured.median_ms:.2f}", f"{lo:.2f} .. {hi:.2f}")
    from featherface_tune.terminal import print_table

    print_table(out, t)


@handle_errors
def latency_table_cmd(
    target: Annotated[int, typer.Option("--target", "-t", help="Cover the exact configs of this parameter target (what `search --objective latency` needs).")] = 489_000,
    space_file: Annotated[Optional[Path], typer.Option("--space", help="TOML search-space file (as for search).")] = None,
    fix: Annotated[Optional[List[str]], typer.Option("--fix", help="Pin a knob: field=value (repeatable), as for search.")] = None,
    runtime: RuntimeOpt = None,
    threads: LatThreadsOpt = 1,
    size: InputSizeOpt = DEFAULT_INPUT,
    validate: ValidateOpt = 5,
    block_seconds: BlockSecondsOpt = 1.0,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Time everything again (drop the cached table).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Build (or extend) the per-block latency table of a runtime, thread count and input size ahead
    of time: every block setting the exact configs of --target can give, timed once on this machine,
    then a few whole configs to fit the overhead and report the model's error and Kendall tau.
    Tables live in $XDG_CACHE_HOME/featherface-tune/latency (default ~/.cache). See docs/search.md.
    """
    from featherface_tune.bounds import check_build_size, check_count
    from featherface_tune.deploy.latency import check_runtime
    from featherface_tune.deploy.latency_table import get_table, table_configs
    from featherface_tune.errors import InputError
    from featherface_tune.tuner.solve import prove
    from featherface_tune.tuner.space import build_space

    check_count(target, "--target")
    h, w = input_size(size)
    check_build_size(h, w, f"--input-size {h} {w}")
    if threads < 1:
        raise InputError(f"--threads {threads}: must be at least 1")
    _check_build_options(validate, block_seconds)
    rt = check_runtime(runtime)
    space = build_space(space_file, fix or [])
    proof = prove(space, target, 0, input_size=(h, w))
    exact = proof.exact
    cfgs = [exact.config(i) for i in range(len(exact))] if exact is not None else []
    if not cfgs:
        _note(f"--target {target:,}: no exact config to cover (or too many to list); the table covers the presets")
    bar, update = _progress()
    try:
        table = get_table(table_configs(cfgs), rt, threads, (h, w), validate=validate, block_seconds=block_seconds,
                          note=_note, progress=update, rebuild=rebuild)
    finally:
        bar.stop()
    data = table.summary()
    if json_:
        print_json(data)
        return
    from rich.table import Table

    t = Table(title=f"latency table: {rt}, {threads} thread(s), {h}x{w}")
    t.add_column("")
    t.add_column("value", overflow="fold")
    for label, key in (("block groups", "groups"), ("block timings", "points"), ("overhead ms", "overhead_ms"),
                       ("whole configs", "configs"), ("median abs error %", "median_abs_pct_error"),
                       ("Kendall tau", "kendall_tau"), ("seconds timing", "build_seconds"), ("file", "path")):
        t.add_row(label, str(data[key]))
    from featherface_tune.terminal import print_table

    print_table(out, t)


__all__ = ["latency_cmd", "latency_table_cmd"]
