"""`featherface-tune calibrate`: measure how well short proxy training ranks configs like longer training."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    AmpOpt, DeviceOpt, JsonOpt, ThreadsOpt, err, handle_errors, parse_tolerance, print_json, warn,
)
from featherface_tune.errors import InputError

MIN_CONFIGS = 4  # fewer: Kendall tau takes only a few values and its bootstrap CI collapses
NEAR_ZERO_AP = 0.01  # below it on every run, APs rank noise


@handle_errors
def calibrate_cmd(
    proxy_data: Annotated[Path, typer.Option("--proxy-data", help="Dataset folder with train/, val/ and ground_truth/ (as for search --proxy-data).")],
    configs: Annotated[int, typer.Option("--configs", "-k", help="Exact-budget configs to compare, spread over the P3 SSH width.")] = 6,
    epochs: Annotated[List[int], typer.Option("--epochs", help="Proxy epochs (repeat for several fidelities: the cheapest whose tau reaches --min-tau is named).")] = [2],  # noqa: B006 - typer needs a literal
    reference_epochs: Annotated[int, typer.Option("--reference-epochs", help="Epochs of the reference training each proxy ranking is compared with.")] = 8,
    image_size: Annotated[int, typer.Option("--image-size", help="Square training size (multiple of 32), proxy and reference alike.")] = 160,
    target: Annotated[int, typer.Option("--target", "-t", help="Parameter budget of the sampled configs.")] = 489_000,
    tolerance: Annotated[str, typer.Option("--tolerance", help="Allowed |params - target|: N parameters or N% of the target (as for search --tolerance).")] = "0",
    space_file: Annotated[Optional[Path], typer.Option("--space", help="TOML search-space file (as for search --space).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Proxy runs per config, each with its own seed (2 or more give the seed-to-seed noise floor).")] = 2,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for plan.json, runs.jsonl (one line per finished run), calibration.json and each run's checkpoints; rerun the same command to resume.")] = Path("calibration"),
    min_tau: Annotated[Optional[float], typer.Option("--min-tau", help="Name the cheapest --epochs whose Kendall tau reaches this.")] = None,
    metric: Annotated[str, typer.Option("--metric", help="AP compared: easy, medium or hard.")] = "hard",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per step.")] = 8,
    subset: Annotated[float, typer.Option("--subset", help="Training images: fraction (<= 1) or a count, stratified by event.")] = 1.0,
    val_subset: Annotated[float, typer.Option("--val-subset", help="Fraction of val images evaluated.")] = 1.0,
    val_max_side: Annotated[Optional[int], typer.Option("--val-max-side", help="Shrink larger val images to this long side.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the config sampling.")] = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    amp: AmpOpt = "auto",
    json_: JsonOpt = False,
) -> None:
    """Train K exact-budget configs briefly (--seeds times) and at --reference-epochs, and report how
    well the short ranking predicts the long one: Kendall tau and Spearman rho with bootstrap CIs,
    the seed-to-seed tau (noise floor) and each run's cost. Killed runs resume. See docs/proxy.md.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import featherface_tune.calibration as C
    from featherface_tune.training.device import describe, resolve_amp, resolve_device, set_threads
    from featherface_tune.tuner.space import build_space

    if not proxy_data.is_dir():
        raise InputError(f"--proxy-data {str(proxy_data)!r} is not a directory")
    if min_tau is not None and not -1.0 <= min_tau <= 1.0:
        raise InputError(f"--min-tau {min_tau}: must be in [-1, 1]")
    if target <= 0:
        raise InputError(f"--target {target}: must be a positive parameter count")
    tol = parse_tolerance(tolerance, target)
    if configs < MIN_CONFIGS:  # Kendall tau over 2 or 3 points can only be -1, 0 or 1 (or a third)
        warn(f"--configs {configs}: with fewer than {MIN_CONFIGS} configs tau and its CI say little "
             f"(2 configs give tau 1.000, CI [1.00, 1.00] or -1.000); use --configs {MIN_CONFIGS} or more")
    space = build_space(space_file)
    settings = C.CalibrationSettings(
        data=str(proxy_data.resolve()), target=target, epochs=tuple(sorted(set(epochs))),
        reference_epochs=reference_epochs, seeds=seeds, image_size=image_size, metric=metric,
        batch_size=batch_size, subset=subset, val_subset=val_subset, val_max_side=val_max_side,
        tolerance=tol, sample_seed=seed, space=space.to_dict())
    settings.validate()
    dev = resolve_device(device)
    n_threads = set_threads(threads)
    with err.status(f"picking {configs} configs with {target:,} params..."):
        cfgs = C.open_plan(out_dir, settings, lambda: C.pick_configs(space, target, configs, tol, seed))
    if len(cfgs) != configs:
        raise InputError(f"--out {str(out_dir)!r} holds a calibration of {len(cfgs)} configs, not {configs}")
    err.print(f"calibrating {len(cfgs)} configs on {describe(dev, n_threads, resolve_amp(amp, dev))}; "
              f"results in {out_dir}", highlight=False)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=err, transient=False) as bar:
        task = bar.add_task("calibrate", total=len(settings.runs(len(cfgs))), info="")

        def on_run(spec, rec, done, total):  # type: ignore[no-untyped-def]
            if rec is None:
                bar.update(task, completed=done, info=f"training {spec.key}")
            else:
                bar.update(task, completed=done, info=f"{spec.key}: {metric} AP {rec['value']:.4f} "
                                                      f"({rec['seconds']:.0f} s)")

        result = C.run_calibration(settings, out_dir, cfgs, device=str(dev), amp=amp, min_tau=min_tau,
                                   on_run=on_run)
    data = C.calibration_json(result)  # the analysis just made, not a second one from the files
    aps = [r["value"] for r in data.get("runs", []) if isinstance(r.get("value"), (int, float))]
    if aps and max(aps) < NEAR_ZERO_AP:
        warn(f"every run's {metric} AP is below {NEAR_ZERO_AP} (highest {max(aps):.4f}): the rankings compare "
             "noise; train longer (--epochs, --reference-epochs) or on more data")
    if json_:
        print_json(data)
        return
    from featherface_tune.commands._tables import print_tables

    print_tables(C.tables(data))
    if min_tau is not None:
        msg = (f"cheapest proxy with tau >= {min_tau}: {data['chosen_epochs']} epochs"
               if data["chosen_epochs"] is not None else f"no --epochs value reaches tau >= {min_tau}")
        err.print(msg, highlight=False)
