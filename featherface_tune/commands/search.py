"""`featherface-tune search`: find configs with exactly the target parameter count, best first."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from featherface_tune.commands._common import (  # noqa: F401 - parse_tolerance: a public name of this module
    DeviceOpt, InputSizeOpt, JsonOpt, StorageOpt, ThreadsOpt, err, fail, handle_errors, out, parse_tolerance, print_json,
)
from featherface_tune.reports.tables import CONFIG_COLUMNS, config_cells, describe_config, ssh_levels
from featherface_tune.terminal import print_wrapped
from featherface_tune.errors import InputError, interrupt_exit_code
from featherface_tune.models.config import DEFAULT_INPUT
from featherface_tune.tuner import records as R
from featherface_tune.tuner import registry
from featherface_tune.tuner.records import DEFAULT_REFERENCE, DEFAULT_TRIALS


@handle_errors
def search_cmd(
    target: Annotated[int, typer.Option("--target", "-t", help="Parameter target (exact unless --tolerance).")],
    tolerance: Annotated[str, typer.Option("--tolerance", help="Allowed |params - target|: N parameters or N% of the target.")] = "0",
    max_macs: Annotated[Optional[int], typer.Option("--max-macs", help="Also require MACs <= N at --input-size.")] = None,
    input_size: InputSizeOpt = DEFAULT_INPUT,
    objective: Annotated[Optional[str], typer.Option("--objective", help="closest, macs, latency, or several comma-separated (a Pareto front); default closest, or proxy AP with --proxy-data.")] = None,
    reference: Annotated[str, typer.Option("--reference", help="Preset name or config file that --objective closest stays near.")] = DEFAULT_REFERENCE,
    dcn_macs: Annotated[str, typer.Option("--dcn-macs", metavar="full|dense", help="MAC convention: full counts the DCN offset and modulator convs, dense leaves them out.")] = "full",
    convention: Annotated[str, typer.Option("--convention", help="Count params and MACs as this convention does (see `count --conventions`), e.g. thop: the paper's 0.49 M.")] = "numel",
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Latency objective: onnxruntime (default when the deploy extra is installed) or torch.")] = None,
    latency_mode: Annotated[str, typer.Option("--latency-mode", metavar="model|sampled", help="Latency objective: model (solve under the per-block latency model, then time finalists side by side) or sampled (time every sampled trial).")] = "model",
    finalists: Annotated[int, typer.Option("--finalists", help="Latency model: best predictions timed whole, with the macs optimum and the closest answer.")] = 5,
    space: Annotated[Optional[Path], typer.Option("--space", help="TOML search-space file (knob = value | [values] | {min, max, step}).")] = None,
    fix: Annotated[Optional[List[str]], typer.Option("--fix", help="Pin a knob: field=value (repeatable), e.g. --fix neck=bifpn --fix ssh_channels=[56,72,72].")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Trials the study should hold when done (shared by all workers; a rerun resumes). Solved objectives (closest, macs) ignore it.")] = DEFAULT_TRIALS,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop this worker after S seconds.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (default: derived from the search, so a rerun resumes).")] = None,
    storage: StorageOpt = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the best config as TOML (accepted by `count --config`).")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows in the table of best configs (and optima recorded for solved objectives).")] = 10,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampler seed (give each worker its own).")] = None,
    proxy_data: Annotated[Optional[Path], typer.Option("--proxy-data", help="Dataset folder: maximise proxy-trained AP of feasible configs.")] = None,
    proxy_epochs: Annotated[Optional[int], typer.Option("--proxy-epochs", help="Proxy training epochs.")] = None,
    proxy_subset: Annotated[Optional[float], typer.Option("--proxy-subset", help="Training subset: fraction (<= 1) or image count.")] = None,
    proxy_image_size: Annotated[Optional[int], typer.Option("--proxy-image-size", help="Proxy training image size.")] = None,
    proxy_time_budget: Annotated[Optional[float], typer.Option("--proxy-time-budget", help="Seconds of proxy training per trial.")] = None,
    metric: Annotated[str, typer.Option("--metric", help="Proxy AP subset: easy, medium or hard.")] = "hard",
    pruner: Annotated[str, typer.Option("--pruner", help="Proxy searches: median (stop trials below the median AP at an epoch), hyperband (epochs as the resource) or none.")] = "median",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Search FeatherFace configs that hit a parameter budget exactly; the objective ranks the hits.

    The whole space is counted exhaustively first: if no config lies within the window, the command says so, names the nearest achievable counts and exits 1. closest and macs are then solved over every exact config (proven optimum); other objectives are sampled, each sample repaired to the nearest exact config. See docs/search.md.
    """
    from featherface_tune.training.device import check_threads
    from featherface_tune.tuner._plan import check_arguments

    # the arguments first, by the API's own checks: a usage error imports neither Optuna nor torch
    n_threads = check_threads(threads)
    if export is not None and not export.resolve().parent.is_dir():
        raise InputError(f"--export {str(export)!r}: folder {str(export.resolve().parent)!r} does not exist")
    proxy_options = {"proxy_epochs": proxy_epochs, "proxy_subset": proxy_subset, "proxy_image_size": proxy_image_size,
                     "proxy_time_budget": proxy_time_budget}
    tol, (h, w) = check_arguments(
        target=target, tolerance=tolerance, max_macs=max_macs, trials=trials, timeout=timeout, top=top, seed=seed,
        storage=storage, study=study, input_size=input_size, proxy_data=proxy_data, needs_proxy_data=proxy_options,
        objective=objective, reference=reference, dcn_macs=dcn_macs, convention=convention, pruner=pruner,
        latency_runtime=runtime, latency_threads=n_threads, latency_mode=latency_mode, finalists=finalists)

    import optuna

    from featherface_tune.tuner.api import search
    from featherface_tune.tuner.objectives import load_proxy
    from featherface_tune.tuner.solve import NoConfigInWindow
    from featherface_tune.tuner.space import build_space
    from featherface_tune.tuner.storage import default_storage_url

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are recorded as fail_reason
    fidelity = proxy_fn = None
    if proxy_data is not None:  # proxy training: torch from here on
        from featherface_tune.training.device import resolve_device, set_threads
        from featherface_tune.training.spec import Fidelity

        fidelity = Fidelity.from_search_options(proxy_epochs, proxy_subset, proxy_image_size, proxy_time_budget,
                                                metric)
        n_threads = set_threads(threads)
        proxy_fn = load_proxy(proxy_data, str(resolve_device(device)))
    search_space = build_space(space, fix or [])

    shown = _TrialProgress("search" if objective not in (None, "closest", "macs") or proxy_data else "recording")
    try:
        with shown:
            res = search(target, space=search_space, objective=objective, trials=trials, tolerance=tol,
                         max_macs=max_macs, input_size=(h, w), dcn_macs=dcn_macs, convention=convention,
                         reference=reference, study=study, storage=storage or default_storage_url(), seed=seed,
                         timeout=timeout, top=top, proxy=proxy_fn, proxy_data=proxy_data, fidelity=fidelity,
                         callbacks=[shown.on_trial], note=lambda text: print_wrapped(err, text),
                         on_start=shown.on_start, pruner=pruner, latency_threads=n_threads, latency_runtime=runtime,
                         latency_mode=latency_mode, finalists=finalists, latency_progress=shown.on_table)
    except NoConfigInWindow as exc:
        cert = getattr(exc, "certificate", None)
        if cert is not None:
            _print_unreachable(cert, json_, max_macs if cert.in_window else None)
        raise
    _show_result(res, top, json_, export)
    _refuse_no_result(res)
    _first_hit_note(res)
    if not json_:
        for line in explain([r.record for r in res.best[:top]], res.spec, target, tolerance, export, reference):
            print_wrapped(err, line)


class _TrialProgress:
    """The search's progress display on stderr: a bar of trials (shown once trials run; a solved
    objective only records its proven optima: "recording") and the latency table's build."""

    def __init__(self, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                 console=err, transient=False)
        self.task = self.progress.add_task(label, total=None, info="", start=False, visible=False)
        self.table_task: Any = None
        self.done = self.feasible = 0
        self.best: float | None = None

    def __enter__(self) -> "_TrialProgress":
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.progress.live.is_started:  # rich prints a blank line when stopping one never started
            self.progress.stop()

    def on_start(self, before: int, total: int) -> None:
        self.done = before
        if before < total:
            self.progress.update(self.task, total=total, completed=before, visible=True)
            self.progress.start_task(self.task)
            self.progress.start()

    def on_trial(self, st: Any, t: Any) -> None:
        self.done += 1
        if t.user_attrs.get(R.FEASIBLE) and t.state.name == "COMPLETE":
            self.feasible += 1
            v = t.values[0] if t.values else None
            if v is not None and (self.best is None or _better(v, self.best, st.directions[0].name.lower())):
                self.best = v
        name = st.metric_names[0] if st.metric_names else "value"
        best = "" if self.best is None else f", best {name} {_fmt(name, self.best)}"
        self.progress.update(self.task, completed=self.done, info=f"exact {self.feasible}{best}")

    def on_table(self, what: str, done: int, total: int) -> None:
        """The latency table build's (what, done, total) callback."""
        if self.table_task is None:
            self.table_task = self.progress.add_task("latency table", total=total, info="")
            self.progress.start()
        self.progress.update(self.table_task, description=what, completed=done, total=total)


def _show_result(res: Any, top: int, json_: bool, export: Path | None) -> None:
    """The result on stdout (the table, or `SearchResult.to_json`) and the best config exported."""
    ranked = [r.record for r in res.best]
    solved = res.solved is not None
    if json_:
        print_json(res.to_json(top))
    elif ranked:
        _print(_table(ranked[:top], res.spec, res.name, solved))
    if not json_ and len(res.pareto) > top:
        err.print(f"the Pareto front has {len(res.pareto)} configs; the table shows the first {top} "
                  f"(--top {len(res.pareto)}, or --json's \"pareto\", lists them all)", highlight=False)
    if export is not None and ranked:
        _export(export, ranked[0], res.spec, res.name)
        err.print(f"wrote the best config{'' if solved else f' (trial {ranked[0].number})'} to {str(export)!r}",
                  highlight=False)


def _first_hit_note(res: Any) -> None:
    """When a sampled search first hit the window, and how long this call took."""
    hit = res.first_hit
    if hit and not hit.get("resumed") and res.solved is None:
        what = "first exact hit" if res.spec.tolerance == 0 else "first config in the window"
        err.print(f"{what}: trial {hit['trial']} after {hit['seconds']:.1f} s; "
                  f"{len(res.trials)} trials in {res.seconds:.1f} s", highlight=False)


def _refuse_no_result(res: Any) -> None:
    """Exit non-zero when the call was interrupted (130, or 143 after SIGTERM) or nothing feasible was
    found (1, naming the trial nearest the target and the failures)."""
    from featherface_tune.tuner.ranking import nearest_target

    if res.interrupted:  # Optuna has marked the trial in flight FAIL
        code = interrupt_exit_code()  # 143 after SIGTERM, 130 after Ctrl-C
        what = "terminated" if code == 143 else "interrupted"
        raise fail(f"{what} after {len(res.trials)} trials; rerun the same command to resume study {res.name!r}", code)
    if res.best:
        return
    records, cert = res.records, res.certificate
    failed = [r for r in records if r.state == "FAIL" and r.fail_reason]
    if failed and len(failed) == len(records):
        raise fail(f"every trial failed ({len(failed)}), e.g. {failed[-1].fail_reason}", 1)
    near = nearest_target(records, 1)
    hint = f"; nearest the target so far: {near[0].params:,} params ({near[0].delta:+,})" if near else ""
    known = f" although the space holds {cert.in_window:,} within the window" if cert.complete else ""
    why = f"; {len(failed)} trials failed, e.g. {failed[-1].fail_reason}" if failed else ""
    raise fail(f"no feasible config found in {len(records)} trials{known}{hint}{why}; raise --trials", 1)


def explain(rows: list[Any], spec: Any, target: int, tolerance: str, export: Path | None,
            reference: str = DEFAULT_REFERENCE) -> list[str]:
    """What a person needs after the table: the winner, its ties and why, what `dist` measures, the
    convention hint, and the next commands."""
    best = rows[0]
    c = dict(best.config)
    lines = [f"best: {describe_config(c)}: {best.params:,} params, {best.macs:,} MACs"]
    if "closest" in spec.objectives and spec.reference is not None and best.closest is not None:
        ties = [r for r in rows[1:] if r.closest is not None and abs(r.closest - best.closest) < 1e-9]
        if ties:
            permuted = all(sorted(ssh_levels(r.config)) == sorted(ssh_levels(c)) and _same_but_ssh(r.config, c)
                           for r in ties)
            why = ("the same config with its SSH widths in another order across P3/P4/P5: permuting them keeps "
                   "the params and the distance; ties go to fewer MACs" if permuted
                   else "equally far from the reference; ties go to fewer MACs")
            lines.append(f"it ties with {len(ties)} other{'s' if len(ties) > 1 else ''} at dist "
                         f"{best.closest:.3f}: {why}")
        lines.append(f"dist: how far a config is from the reference {reference} "
                     f"({describe_config(dict(spec.reference))}): each width knob adds |a - b| / max(a, b), "
                     "each switch changed (neck type, a CBAM, DCN, shuffle) adds 10; --reference picks another")
    if spec.convention == "numel" and abs(target - 489_000) <= 5_000:
        lines.append("note: the paper's 0.49 M is thop's count of the official model (which has 592,371 "
                     "parameters); to hit the target as the paper counted, add --convention thop")
    cmd = f"featherface-tune search --target {target}" + (f" --tolerance {tolerance}" if tolerance != "0" else "")
    if spec.convention != "numel":
        cmd += f" --convention {spec.convention}"
    file = str(export) if export is not None else "best.toml"
    lines.append("next:")
    if export is None:
        lines.append(f"  {cmd} --export best.toml")
    lines += [f"  featherface-tune count --config {file}",
              f"  featherface-tune train --config {file} --data DIR   (needs torch)",
              "  featherface-tune gate   (a budgets/*.toml naming it: docs/gate.md)"]
    return lines


def _same_but_ssh(a: Any, b: Any) -> bool:
    return {k: v for k, v in dict(a).items() if k != "ssh_channels"} == {
        k: v for k, v in dict(b).items() if k != "ssh_channels"}


def _print(table: Any) -> None:
    """A table on stdout, fitted to 100 columns (`featherface_tune.terminal`; --json has every field)."""
    from featherface_tune.terminal import print_table

    print_table(out, table, optional=("shuffle", "DCN", "CBAM b/n"), elsewhere="--json")


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "minimize" else a > b


def _fmt(name: str, v: float) -> str:
    obj = registry.get(name)
    return obj.show(v) if obj is not None else f"{v:.4f}"


def _table(rows: list[Any], spec: Any, name: str, solved: bool = False):  # type: ignore[no-untyped-def]
    """The best configs; a solved search (every exact config ranked) shows no trial numbers and no
    delta when the target is exact."""
    from rich.table import Table

    from featherface_tune.tuner.records import window_text

    h, w = spec.input_size
    title = f"best {'exact ' if solved and not spec.tolerance else ''}configs: {name}" if solved \
        else f"best feasible configs: {name}"
    ref = " from the reference" if "closest" in spec.objectives else ""
    t = Table(title=title,
              caption=f"params {window_text(spec.target, spec.tolerance)}; MACs at {h}x{w} ({spec.dcn_macs})"
                      + (f"; counted as {spec.convention}" if spec.convention != "numel" else "")
                      + (f"; dist{ref}: lower is closer" if "closest" in spec.objectives else ""))
    show_trial, show_delta = not solved, bool(spec.tolerance) or not solved
    for col, just in (("#", "right"), ("trial", "right"), ("params", "right"), ("delta", "right"),
                      ("MACs", "right")):
        if (col == "trial" and not show_trial) or (col == "delta" and not show_delta):
            continue
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    # one column per objective, as the registry names and shows it (MACs have their own column)
    shown = [o for o in spec.objectives if o != "macs"]
    for o in shown:
        obj = registry.get(o)
        t.add_column(obj.column if obj is not None else o, justify="right")
    predicted = any(r.latency_predicted_ms is not None for r in rows)
    if predicted:
        t.add_column("pred ms", justify="right")
    for col in CONFIG_COLUMNS:
        t.add_column(col)
    for i, r in enumerate(rows, 1):
        row = [str(i)] + ([str(r.number)] if show_trial else []) + [f"{r.params:,}"]
        row += ([f"{r.delta:+,}"] if show_delta else []) + [f"{r.macs / 1e6:,.1f}M"]
        for o in shown:
            obj = registry.get(o)
            v = r.objective_value(o)
            row.append("-" if v is None else obj.show(v) if obj is not None else f"{v:.4g}")
        if predicted:
            row.append(f"{r.latency_predicted_ms:.1f}" if r.latency_predicted_ms is not None else "-")
        t.add_row(*row, *config_cells(dict(r.config)).values())
    return t


def _export(path: Path, best: Any, spec: Any, name: str) -> None:
    """The best config as TOML for `--config`: its fields under [model], and under [counted] how the
    search counted it, so `count --config FILE` shows the figure the search hit."""
    import tomli_w

    from featherface_tune.models.config import from_mapping

    cfg = from_mapping(dict(best.config))
    h, w = spec.input_size
    header = (f"# featherface-tune search: study {name!r}, trial {best.number}\n"
              f"# params {best.params:,} (target {spec.target:,}, delta {best.delta:+,}); MACs {best.macs:,} at {h}x{w}\n"
              f"# convention: {spec.convention}, dcn_macs {spec.dcn_macs}")
    if spec.convention != "numel":
        from featherface_tune.counter.analytic import count

        header += f" (true parameters: {count(cfg, h, w).params:,})"
    body = tomli_w.dumps({"counted": {"convention": spec.convention, "dcn_macs": spec.dcn_macs},
                          "model": cfg.to_dict()})
    try:
        path.write_text(header + "\n" + body, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--export {str(path)!r}: cannot write: {exc.strerror or exc}") from None


def _print_unreachable(cert: Any, as_json: bool, max_macs: int | None = None) -> None:
    """What the proof says when nothing is feasible: the window is empty, or (`max_macs` given) every
    config in it costs more MACs than allowed (the error line names the fewest)."""
    data = {"status": "unreachable", "target": cert.target, "tolerance": cert.tolerance,
            "certificate": cert.to_json()}
    if max_macs is not None:
        data.update(status="over_max_macs", max_macs=max_macs)
    if as_json:
        print_json(data)
        return
    if max_macs is not None:  # the window is not empty: the nearest-counts table would mislead
        return
    from rich.table import Table

    t = Table(title="nearest achievable parameter counts (proven by exhaustive count)",
              caption=cert.evidence())
    for col in ("", "params", "delta", *CONFIG_COLUMNS):
        t.add_column(col)
    for label, wit in (("smallest", cert.smallest), ("nearest below", cert.below),
                       ("nearest above", cert.above), ("largest", cert.largest)):
        if wit is None:
            continue
        t.add_row(label, f"{wit.params:,}", f"{wit.params - cert.target:+,}", *config_cells(dict(wit.config)).values())
    _print(t)


__all__ = ["search_cmd", "parse_tolerance", "DEFAULT_TRIALS"]
