"""`featherface-tune search`: find configs with exactly the target parameter count, best first."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    InputSizeOpt, JsonOpt, err, fail, handle_errors, input_size, out, print_json,
)
from featherface_tune.errors import InputError

DEFAULT_TRIALS = 300


def parse_tolerance(text: str, target: int) -> int:
    """`N` parameters or `N%` of the target (rounded down) -> absolute parameters."""
    t = text.strip().replace("_", "").replace(",", "")
    try:
        if t.endswith("%"):
            pct = float(t[:-1])
            if not math.isfinite(pct) or pct < 0:
                raise ValueError
            return int(math.floor(target * pct / 100.0 + 1e-9))
        value = int(t)
        if value < 0:
            raise ValueError
        return value
    except ValueError:
        raise InputError(f"--tolerance {text!r}: give a parameter count (e.g. 500) or a percentage "
                         "(e.g. 0.1%), not negative") from None


@handle_errors
def search_cmd(
    target: Annotated[int, typer.Option("--target", "-t", help="Parameter target (exact unless --tolerance).")],
    tolerance: Annotated[str, typer.Option("--tolerance", help="Allowed |params - target|: N parameters or N% of the target.")] = "0",
    max_macs: Annotated[Optional[int], typer.Option("--max-macs", help="Also require MACs <= N at --input-size.")] = None,
    size: InputSizeOpt = (640, 640),
    objective: Annotated[Optional[str], typer.Option("--objective", help="macs, latency, or several comma-separated (a Pareto front); default macs, or proxy AP with --proxy-data.")] = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Latency objective: onnxruntime (default when the deploy extra is installed) or torch.")] = None,
    threads: Annotated[int, typer.Option("--latency-threads", help="Latency objective: intra-op threads.")] = 1,
    space_file: Annotated[Optional[Path], typer.Option("--space", help="TOML search-space file (knob = value | [values] | {min, max, step}).")] = None,
    fix: Annotated[Optional[List[str]], typer.Option("--fix", help="Pin a knob: field=value (repeatable), e.g. --fix neck=bifpn --fix ssh_channels=[56,72,72].")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Trials the study should hold when done (shared by all workers; a rerun resumes).")] = DEFAULT_TRIALS,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop this worker after S seconds.")] = None,
    study_name: Annotated[Optional[str], typer.Option("--study", help="Study name (default: derived from the search, so a rerun resumes).")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage: sqlite:///FILE, postgresql://..., mysql://..., journal:FILE (default: ./featherface-tune.db).")] = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the best config as TOML (accepted by `count --config`).")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows in the table of best configs.")] = 10,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampler seed (give each worker its own).")] = None,
    proxy_data: Annotated[Optional[Path], typer.Option("--proxy-data", help="Dataset folder: maximise proxy-trained AP of feasible configs.")] = None,
    proxy_epochs: Annotated[Optional[int], typer.Option("--proxy-epochs", help="Proxy training epochs.")] = None,
    proxy_subset: Annotated[Optional[float], typer.Option("--proxy-subset", help="Training subset: fraction (<= 1) or image count.")] = None,
    proxy_image_size: Annotated[Optional[int], typer.Option("--proxy-image-size", help="Proxy training image size.")] = None,
    proxy_time_budget: Annotated[Optional[float], typer.Option("--proxy-time-budget", help="Seconds of proxy training per trial.")] = None,
    metric: Annotated[str, typer.Option("--metric", help="Proxy AP subset: easy, medium or hard.")] = "hard",
    json_: JsonOpt = False,
) -> None:
    """Search FeatherFace configs that hit a parameter budget exactly; the objective ranks the hits.

    Optuna samples the structure (neck, widths, switches); the budget knobs (per-level SSH widths, CBAM ratios, BiFPN depth) are solved exactly from the analytic count. Before searching, the whole space is counted exhaustively: if no config lies within the window, the command says so, names the nearest achievable counts and exits 1. See docs/search.md.
    """
    t_start = time.perf_counter()
    import optuna

    from featherface_tune.tuner import records as R
    from featherface_tune.tuner.objectives import BudgetObjective, Fidelity, load_proxy, parse_objectives, summarize
    from featherface_tune.tuner.solve import NoConfigInWindow, certify, check_reachable, check_values
    from featherface_tune.tuner.space import build_space
    from featherface_tune.tuner import study as S

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are recorded as fail_reason

    if target <= 0:
        raise InputError(f"--target {target}: must be a positive parameter count")
    tol = parse_tolerance(tolerance, target)
    if max_macs is not None and max_macs <= 0:
        raise InputError(f"--max-macs {max_macs}: must be positive")
    h, w = input_size(size)
    if trials < 1:
        raise InputError(f"--trials {trials}: must be at least 1")
    if timeout is not None and not timeout > 0:
        raise InputError(f"--timeout {timeout}: must be positive seconds")
    if top < 1:
        raise InputError(f"--top {top}: must be at least 1")
    if export is not None and not export.resolve().parent.is_dir():
        raise InputError(f"--export {str(export)!r}: folder {str(export.resolve().parent)!r} does not exist")
    proxy_opts = (proxy_epochs, proxy_subset, proxy_image_size, proxy_time_budget)
    if proxy_data is None and any(v is not None for v in proxy_opts):
        raise InputError("--proxy-epochs/--proxy-subset/--proxy-image-size/--proxy-time-budget need --proxy-data DIR")
    objectives = parse_objectives(objective, proxy_data is not None)
    if "latency" in objectives:
        from featherface_tune.deploy.latency import check_runtime

        runtime = check_runtime(runtime)
        if threads < 1:
            raise InputError(f"--latency-threads {threads}: must be at least 1")
        err.print(f"latency: {runtime}, {threads} thread(s), batch 1 at {h}x{w}, median to +/-3 % (95 %)",
                  highlight=False)
    fidelity = Fidelity(proxy_epochs, proxy_subset, proxy_image_size, proxy_time_budget, metric)
    proxy_fn = load_proxy(proxy_data) if proxy_data is not None else None
    space = build_space(space_file, fix or [])

    with err.status("counting every config in the space..."):
        cert = certify(space, target, tol)
    check_values(cert)
    try:
        check_reachable(cert)
    except NoConfigInWindow:
        _print_unreachable(cert, json_)
        raise
    if cert.complete:
        err.print(f"space: {cert.configs:,} valid configs; {cert.in_window:,} with {R.window_text(target, tol)} params "
                  f"(proof: {cert.evidence()})", highlight=False)
    else:
        err.print(f"space: more than {cert.structures:,} structures; too large to count exhaustively, "
                  "searching without a proof of reachability", highlight=False)

    spec = R.StudySpec(target, tol, (h, w), objectives, max_macs, space.to_dict())
    store, info = S.open_storage(storage)
    name = study_name or S.default_study_name(spec)
    pruner = None
    if proxy_fn is not None and len(objectives) == 1:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    study = S.open_study(store, name, spec, S.make_sampler(seed), pruner)
    objective_fn = BudgetObjective(space, spec, proxy_fn, proxy_data, fidelity, latency_runtime=runtime,
                                   latency_threads=threads)

    before = S.counted_trials(study)
    mine: list[int] = []
    first_hit: dict[str, Any] = {}
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))  # read-only: no copies needed
    hit = next((t for t in done if t.user_attrs.get(R.FEASIBLE)), None)
    if hit is not None:
        first_hit = {"trial": hit.number, "seconds": None, "resumed": True}
    err.print(f"study {name!r} on {info.url} ({info.kind}): {summarize(spec)}; "
              f"{before} of {trials} trials done", highlight=False)

    interrupted = False
    if before < trials:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        stats = {"feasible": 0, "best": None}
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=err,
                      transient=False) as progress:
            task = progress.add_task("search", total=trials, completed=before, info="")

            def on_trial(st: Any, t: Any) -> None:
                mine.append(t.number)
                if t.user_attrs.get(R.FEASIBLE) and t.state.name == "COMPLETE":
                    stats["feasible"] += 1
                    if not first_hit:
                        first_hit.update({"trial": t.number, "seconds": round(time.perf_counter() - t_start, 3),
                                          "resumed": False})
                    v = t.values[0] if t.values else None
                    if v is not None and (stats["best"] is None or _better(v, stats["best"], spec.directions()[0])):
                        stats["best"] = v
                best = "" if stats["best"] is None else f", best {objectives[0]} {_fmt(objectives[0], stats['best'])}"
                progress.update(task, completed=min(trials, before + len(mine)),
                                info=f"feasible {stats['feasible']}{best}")

            try:
                S.run(study, objective_fn, trials, timeout, [on_trial])
            except KeyboardInterrupt:
                interrupted = True

    records = S.trial_records(study)
    ranks = S.rank_feasible(records, objectives)
    ranked = [r for _, r in ranks]
    seconds = time.perf_counter() - t_start
    result = {
        "study": name,
        "storage": info.url,
        "target": target,
        "tolerance": tol,
        "max_macs": max_macs,
        "input_size": [h, w],
        "objectives": list(objectives),
        "certificate": cert.to_json(),
        "worker": {"trials": sorted(mine), "seconds": round(seconds, 3),
                   "first_exact_hit": first_hit or None, "interrupted": interrupted},
        "study_trials": len(records),
        "feasible_trials": sum(1 for r in records if r.feasible and r.state == "COMPLETE"),
        "feasible_configs": len(ranked),
        "best": [_row_json(r) for r in ranked[:top]],
    }
    if len(objectives) > 1:
        result["pareto"] = [_row_json(r) for k, r in ranks if k == 0]
    if json_:
        print_json(result)
    elif ranked:
        _data_console().print(_table(ranked[:top], spec, name))
    if export is not None and ranked:
        _export(export, ranked[0], spec, name)
        err.print(f"wrote the best config (trial {ranked[0].number}) to {str(export)!r}", highlight=False)
    if interrupted:
        raise fail(f"interrupted after {len(mine)} trials; rerun the same command to resume study {name!r}", 130)
    if not ranked:
        near = S.closest(records, 1)
        hint = f"; closest so far: {near[0].params:,} params ({near[0].delta:+,})" if near else ""
        known = f" although the space holds {cert.in_window:,} within the window" if cert.complete else ""
        failed = [r for r in records if r.state == "FAIL" and r.fail_reason]
        why = f"; {len(failed)} trials failed, e.g. {failed[-1].fail_reason}" if failed else ""
        raise fail(f"no feasible config found in {len(records)} trials{known}{hint}{why}; raise --trials", 1)
    if first_hit and not first_hit.get("resumed"):
        what = "first exact hit" if tol == 0 else "first config in the window"
        err.print(f"{what}: trial {first_hit['trial']} after {first_hit['seconds']:.1f} s; "
                  f"{len(mine)} trials in {seconds:.1f} s", highlight=False)


def _data_console():  # type: ignore[no-untyped-def]
    """stdout console; when stdout is not a terminal, wide enough that tables do not wrap."""
    if out.is_terminal:
        return out
    import sys

    from rich.console import Console

    return Console(file=sys.stdout, width=200, soft_wrap=True)


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "minimize" else a > b


def _fmt(name: str, v: float) -> str:
    if name == "macs":
        return f"{v / 1e6:,.1f}M"
    if name == "latency":
        return f"{v:.1f} ms"
    return f"{v:.4f}"


def _row_json(r: Any) -> dict[str, Any]:
    d = r.to_json()
    d["modules"] = dict(r.modules)
    return d


def _cbam(c: dict[str, Any]) -> str:
    """CBAM reduction ratios, backbone/neck ('off' where that CBAM is off)."""
    return "/".join(str(c[k]) if c[f] else "off" for f, k in (("backbone_cbam", "backbone_cbam_reduction"),
                                                               ("neck_cbam", "neck_cbam_reduction")))


def _widths(cfg: dict[str, Any]) -> str:
    s = cfg["ssh_channels"]
    return "/".join(str(x) for x in (s if isinstance(s, list) else [s] * 3))


def _table(rows: list[Any], spec: Any, name: str):  # type: ignore[no-untyped-def]
    from rich.table import Table

    from featherface_tune.tuner.records import window_text

    h, w = spec.input_size
    t = Table(title=f"best feasible configs: {name}",
              caption=f"params {window_text(spec.target, spec.tolerance)}; MACs at {h}x{w}")
    for col, just in (("#", "right"), ("trial", "right"), ("params", "right"), ("delta", "right"),
                      ("MACs", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    if "latency" in spec.objectives:
        t.add_column("latency ms", justify="right")
    if "proxy_ap" in spec.objectives:
        t.add_column("AP", justify="right")
    for col in ("neck", "neck ch", "SSH P3/P4/P5", "CBAM r b/n", "DCN", "shuffle"):
        t.add_column(col)
    for i, r in enumerate(rows, 1):
        c = dict(r.config)
        neck = f"bifpn x{c['bifpn_repeats']}" if c["neck"] == "bifpn" else "fpn"
        cb = _cbam(c)
        row = [str(i), str(r.number), f"{r.params:,}", f"{r.delta:+,}", f"{r.macs / 1e6:,.1f}M"]
        if "latency" in spec.objectives:
            row.append(f"{r.latency_ms:.1f}" if r.latency_ms is not None else "-")
        if "proxy_ap" in spec.objectives:
            row.append(f"{r.proxy_ap:.4f}" if r.proxy_ap is not None else "-")
        row += [neck, str(c["neck_channels"]), _widths(c), cb, "on" if c["ssh_deformable"] else "off", c["shuffle"]]
        t.add_row(*row)
    return t


def _export(path: Path, best: Any, spec: Any, name: str) -> None:
    from featherface_tune.models.config import from_mapping, to_toml

    cfg = from_mapping(dict(best.config))
    h, w = spec.input_size
    header = (f"# featherface-tune search: study {name!r}, trial {best.number}\n"
              f"# params {best.params:,} (target {spec.target:,}, delta {best.delta:+,}); MACs {best.macs:,} at {h}x{w}")
    try:
        path.write_text(to_toml(cfg, header), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--export {str(path)!r}: cannot write: {exc.strerror or exc}") from None


def _print_unreachable(cert: Any, as_json: bool) -> None:
    data = {"status": "unreachable", "target": cert.target, "tolerance": cert.tolerance,
            "certificate": cert.to_json()}
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    t = Table(title="nearest achievable parameter counts (proven by exhaustive count)",
              caption=cert.evidence())
    for col in ("", "params", "delta", "neck", "neck ch", "SSH P3/P4/P5", "CBAM r b/n", "DCN", "shuffle"):
        t.add_column(col)
    for label, wit in (("smallest", cert.smallest), ("nearest below", cert.below),
                       ("nearest above", cert.above), ("largest", cert.largest)):
        if wit is None:
            continue
        c = dict(wit.config)
        neck = f"bifpn x{c['bifpn_repeats']}" if c["neck"] == "bifpn" else "fpn"
        cb = _cbam(c)
        t.add_row(label, f"{wit.params:,}", f"{wit.params - cert.target:+,}", neck, str(c["neck_channels"]),
                  _widths(c), cb, "on" if c["ssh_deformable"] else "off", c["shuffle"])
    _data_console().print(t)


__all__ = ["search_cmd", "parse_tolerance", "DEFAULT_TRIALS"]
