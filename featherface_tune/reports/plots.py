"""Report plots (matplotlib, Agg canvas, no pyplot state), each saved as PNG and SVG.

Study plots: params vs MACs of all trials with the budget band, the Pareto front (several
objectives), the optimisation history, and proxy AP vs MACs when proxy training ran. Compare plots:
per-module params and MACs of each config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from featherface_tune.counter.analytic import GROUPS
from featherface_tune.tuner.records import window_text
from featherface_tune.reports.data import Comparison, StudyReport, objective_series

PNG_DPI = 150
SIZE = (7.6, 4.8)
COLORS = {"feasible": "#2f6fdf", "infeasible": "#9aa3b2", "best": "#d62728", "band": "#2ca02c",
          "front": "#ff7f0e", "cap": "#c0392b"}
PALETTE = ("#2f6fdf", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
LABELS = {"macs": "MACs", "latency_ms": "latency (ms)", "latency": "latency (ms)", "proxy_ap": "proxy AP", "params": "params"}


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    caption: str
    png: Path
    svg: Path
    wide: bool = False  # a page shows it across the full width


def _new_figure(size: tuple[float, float] = SIZE, nrows: int = 1, ncols: int = 1,
                sharex: bool = False) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, color="#e3e7ee", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _save(fig: Any, out_dir: Path, key: str, title: str, caption: str, wide: bool = False) -> Plot:
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{key}.png", out_dir / f"{key}.svg"
    with matplotlib.rc_context({"svg.hashsalt": f"featherface-tune-{key}"}):
        fig.savefig(png, dpi=PNG_DPI, format="png", metadata={"Software": "featherface-tune"})
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": "featherface-tune"})
    return Plot(key=key, title=title, caption=caption, png=png, svg=svg, wide=wide)


def _fmt_axis(ax: Any, axis: str, quantity: str) -> None:
    """Tick labels people can tell apart: counts in K/M only when the ticks are that far apart (a
    narrow band shows whole numbers, never nine identical "489K"), whole-number ticks for counts and
    trial numbers, and no offset notation (proxy AP reads 0.0003, not 1e-5 + 30)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    which = getattr(ax, f"{axis}axis")
    counts = quantity in ("params", "params_fine", "macs", "trial")
    if counts:
        which.set_major_locator(MaxNLocator(nbins=5 if quantity == "params_fine" else "auto", integer=True))

    def fmt(x: float, _pos: Any) -> str:
        ticks = sorted(which.get_majorticklocs())
        step = min((b - a for a, b in zip(ticks, ticks[1:]) if b > a), default=abs(x) or 1.0)
        if quantity in ("params", "params_fine", "macs"):
            unit, suffix = (1e6, "M") if quantity == "macs" else (1e3, "K")
            if abs(x) >= unit and step >= unit and quantity != "params_fine":
                return f"{x / unit:,.0f}{suffix}"
            return f"{x:,.0f}"
        if quantity == "trial":
            return f"{x:.0f}"
        return f"{x:.4g}"

    which.set_major_formatter(FuncFormatter(fmt))


def _label(objective: str, direction: str | None = None) -> str:
    text = LABELS.get(objective, objective)
    if direction:
        text += "  (lower is better)" if direction == "minimize" else "  (higher is better)"
    return text


def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


# ---- study plots ---------------------------------------------------------------------------------

def params_vs_macs(report: StudyReport, out_dir: Path) -> Plot:
    """All trials (left) and, when the budget band is narrow next to the spread of the trials, a
    zoom on the band (right) so the feasible configs do not collapse onto one line."""
    df, rec = report.trials, report.record
    lo, hi = rec.window()
    params, macs = _num(df["params"]), _num(df["macs"])
    measured = ~np.isnan(params) & ~np.isnan(macs)
    feas = df["feasible"].to_numpy(dtype=bool) & measured
    infeas = measured & ~feas
    xs = np.concatenate([params[measured], [lo, hi]])
    pad = max((xs.max() - xs.min()) * 0.06, rec.tolerance * 0.5, 1.0)
    full = (xs.min() - pad, xs.max() + pad)
    zpad = max(rec.tolerance * 0.6, rec.target * 0.002, 10.0)
    zoom = (lo - zpad, hi + zpad)
    in_zoom = measured & (params >= zoom[0]) & (params <= zoom[1])
    want_zoom = bool(in_zoom.any()) and (zoom[1] - zoom[0]) < 0.35 * (full[1] - full[0])
    fig, axes = _new_figure((SIZE[0] * (1.6 if want_zoom else 1.0), SIZE[1] + 0.5), ncols=2 if want_zoom else 1)
    panels = [(axes[0, 0], full, "every trial")]
    if want_zoom:
        panels.append((axes[0, 1], zoom, "zoom on the budget band"))
    for i, (ax, xlim, what) in enumerate(panels):
        first = i == 0
        if rec.tolerance:
            ax.axvspan(lo, hi, color=COLORS["band"], alpha=0.14, lw=0,
                       label=f"budget {window_text(rec.target, rec.tolerance)}" if first else None)
        ax.axvline(rec.target, color=COLORS["band"], lw=1.4, ls="--",
                   label=(None if rec.tolerance or not first else f"target {rec.target:,} (exact)"))
        if rec.max_macs:
            ax.axhline(rec.max_macs, color=COLORS["cap"], lw=1.2, ls=":",
                       label=f"MACs cap {rec.max_macs:,}" if first else None)
        ax.scatter(params[infeas], macs[infeas], s=26, marker="x", color=COLORS["infeasible"],
                   label=f"infeasible ({int(infeas.sum())})" if first else None, zorder=3)
        ax.scatter(params[feas], macs[feas], s=30, color=COLORS["feasible"], alpha=0.85,
                   edgecolor="white", linewidth=0.5, label=f"feasible ({int(feas.sum())})" if first else None,
                   zorder=4)
        if report.multi_objective and not report.ranked.empty:
            front = report.ranked[report.ranked["pareto"]]
            ax.scatter(_num(front["params"]), _num(front["macs"]), s=90, facecolor="none",
                       edgecolor=COLORS["front"], linewidth=1.6,
                       label=f"Pareto front ({len(front)})" if first else None, zorder=5)
        _mark_best(ax, report, "params", "macs", legend=first)
        ax.set_xlim(*xlim)
        if not first:  # fit the MACs axis to what the zoom shows
            inside = measured & (params >= xlim[0]) & (params <= xlim[1])
            if inside.any():
                ylo, yhi = macs[inside].min(), macs[inside].max()
                ypad = max((yhi - ylo) * 0.08, abs(yhi) * 0.01, 1.0)
                ax.set_ylim(ylo - ypad, yhi + ypad)
        ax.set_xlabel("parameters")
        _fmt_axis(ax, "x", "params" if first else "params_fine")
        _fmt_axis(ax, "y", "macs")
        ax.set_title(what, fontsize=10, loc="left", color="#444")
    axes[0, 0].set_ylabel(f"MACs at {rec.input_size[0]}x{rec.input_size[1]}")
    hidden = int((~measured).sum())
    fig.suptitle("Parameters vs MACs"
                 + (f"  ({hidden} trial{'s' if hidden != 1 else ''} without counts not shown)" if hidden else ""),
                 fontsize=11, x=0.01, ha="left")
    fig.legend(loc="outside lower center", ncols=6, fontsize=8, frameon=False)
    band = (f"green band: the budget {lo:,} .. {hi:,} params" if rec.tolerance
            else f"green line: the exact target {rec.target:,} params")
    zoomed = "; right: zoom on the band" if want_zoom else ""
    return _save(fig, out_dir, "params_vs_macs", "Parameters vs MACs", f"every trial with counts; {band}{zoomed}",
                 wide=want_zoom)


def _ap_limits(ax: Any, ap: np.ndarray) -> None:
    """An AP axis from 0 (AP is a fraction): tiny APs of a short proxy show as tiny, not as a spread."""
    if ap.size:
        top = float(np.nanmax(ap))
        ax.set_ylim(0.0, min(1.0, max(top * 1.15, 0.01)))


def _mark_best(ax: Any, report: StudyReport, xcol: str, ycol: str, legend: bool = True) -> None:
    if report.ranked.empty:
        return
    best = report.ranked.iloc[0]
    x, y = best[xcol], best[ycol]
    if x is None or y is None or pd.isna(x) or pd.isna(y):
        return
    ax.scatter([float(x)], [float(y)], s=170, marker="*", color=COLORS["best"], edgecolor="white",
               linewidth=0.8, zorder=6, label=f"best: trial {int(best['trial'])}" if legend else None)
    ax.annotate(f"trial {int(best['trial'])}", (float(x), float(y)), xytext=(8, 8),
                textcoords="offset points", fontsize=8, color=COLORS["best"])


def pareto_front(report: StudyReport, out_dir: Path) -> Plot | None:
    if not report.multi_objective or report.ranked.empty:
        return None
    (o1, o2), (d1, d2) = report.record.objectives[:2], report.directions[:2]
    ok = report.ranked
    x, y = _num(objective_series(ok, o1)), _num(objective_series(ok, o2))
    on = ok["pareto"].to_numpy(dtype=bool)
    fig, axes = _new_figure()
    ax = axes[0, 0]
    ax.scatter(x[~on], y[~on], s=28, color=COLORS["infeasible"], label=f"dominated ({int((~on).sum())})", zorder=3)
    order = np.argsort(x[on], kind="stable")
    fx, fy = x[on][order], y[on][order]
    ax.plot(fx, fy, color=COLORS["front"], lw=1.4, drawstyle="steps-post" if len(fx) > 1 else "default", zorder=4)
    ax.scatter(fx, fy, s=46, color=COLORS["front"], edgecolor="white", linewidth=0.6,
               label=f"Pareto front ({int(on.sum())})", zorder=5)
    for t, px, py in zip(ok["trial"][on].to_numpy()[order], fx, fy):
        ax.annotate(str(int(t)), (px, py), xytext=(4, 4), textcoords="offset points", fontsize=7, color="#444")
    ax.set_xlabel(_label(o1, d1))
    ax.set_ylabel(_label(o2, d2))
    for axis, o in (("x", o1), ("y", o2)):
        _fmt_axis(ax, axis, "macs" if o == "macs" else o)
    more = f" (first two of {len(report.record.objectives)} objectives)" if len(report.record.objectives) > 2 else ""
    ax.set_title(f"Pareto front of the feasible trials{more}", fontsize=11, loc="left")
    ax.legend(loc="best", fontsize=8, frameon=False)
    return _save(fig, out_dir, "pareto_front", "Pareto front",
                 f"feasible trials, {o1} vs {o2}; labels are trial numbers")


def history(report: StudyReport, out_dir: Path) -> Plot:
    df, rec = report.trials, report.record
    objs = list(rec.objectives)
    fig, axes = _new_figure((SIZE[0], 2.6 + 1.9 * len(objs)), nrows=len(objs), sharex=True)
    n = _num(df["trial"])
    feas = df["feasible"].to_numpy(dtype=bool)
    for i, (obj, d) in enumerate(zip(objs, report.directions)):
        ax = axes[i, 0]
        v = _num(objective_series(df, obj))
        have = np.isfinite(v)
        ax.scatter(n[have & ~feas], v[have & ~feas], s=22, marker="x", color=COLORS["infeasible"],
                   label="infeasible", zorder=3)
        ax.scatter(n[have & feas], v[have & feas], s=24, color=COLORS["feasible"], alpha=0.85,
                   label="feasible", zorder=4)
        fv = np.where(have & feas, v, np.nan)
        if np.any(~np.isnan(fv)):
            acc = np.fmax.accumulate if d == "maximize" else np.fmin.accumulate
            filled = np.where(np.isnan(fv), np.inf if d == "minimize" else -np.inf, fv)
            best = acc(filled)
            best = np.where(np.isinf(best), np.nan, best)
            ax.plot(n, best, drawstyle="steps-post", color=COLORS["best"], lw=1.5,
                    label="best feasible so far", zorder=5)
        ax.set_ylabel(_label(obj))
        _fmt_axis(ax, "y", "macs" if obj == "macs" else obj)
        if obj == "proxy_ap":
            _ap_limits(ax, v[have])
        if i == 0:
            ax.set_title("Optimisation history", fontsize=11, loc="left")
            ax.legend(loc="best", fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("trial")
    _fmt_axis(axes[-1, 0], "x", "trial")  # trial numbers are whole
    return _save(fig, out_dir, "history", "Optimisation history",
                 "objective value of each trial in order; red: best feasible value so far")


def proxy_ap_vs_macs(report: StudyReport, out_dir: Path) -> Plot | None:
    df = report.trials
    if "proxy_ap" not in df or not df["proxy_ap"].notna().any():
        return None
    ap, macs = _num(df["proxy_ap"]), _num(df["macs"])
    have = ~np.isnan(ap) & ~np.isnan(macs)
    feas = df["feasible"].to_numpy(dtype=bool)
    fig, axes = _new_figure()
    ax = axes[0, 0]
    ax.scatter(macs[have & ~feas], ap[have & ~feas], s=26, marker="x", color=COLORS["infeasible"],
               label=f"infeasible ({int((have & ~feas).sum())})", zorder=3)
    ax.scatter(macs[have & feas], ap[have & feas], s=30, color=COLORS["feasible"], alpha=0.85,
               edgecolor="white", linewidth=0.5, label=f"feasible ({int((have & feas).sum())})", zorder=4)
    sub = report.ranked[report.ranked["proxy_ap"].notna()] if not report.ranked.empty else report.ranked
    if not sub.empty:
        top = sub.sort_values("proxy_ap", ascending=False, kind="stable").iloc[0]
        ax.scatter([float(top["macs"])], [float(top["proxy_ap"])], s=170, marker="*", color=COLORS["best"],
                   edgecolor="white", zorder=6, label=f"highest feasible AP: trial {int(top['trial'])}")
    if report.record.max_macs:
        ax.axvline(report.record.max_macs, color=COLORS["cap"], lw=1.2, ls=":", label="MACs cap")
    h, w = report.record.input_size
    ax.set_xlabel(f"MACs at {h}x{w}")
    ax.set_ylabel("proxy AP")
    _fmt_axis(ax, "x", "macs")
    _fmt_axis(ax, "y", "proxy_ap")
    _ap_limits(ax, ap[have])
    ax.set_title("Proxy AP vs MACs", fontsize=11, loc="left")
    ax.legend(loc="best", fontsize=8, frameon=False)
    return _save(fig, out_dir, "proxy_ap_vs_macs", "Proxy AP vs MACs",
                 f"{int(have.sum())} trials with proxy training")


def study_plots(report: StudyReport, out_dir: Path) -> list[Plot]:
    """Every plot that applies to the study, saved under `out_dir`."""
    plots = [params_vs_macs(report, out_dir), pareto_front(report, out_dir), history(report, out_dir),
             proxy_ap_vs_macs(report, out_dir)]
    return [p for p in plots if p is not None]


# ---- compare plots -------------------------------------------------------------------------------

def compare_modules(cmp: Comparison, out_dir: Path) -> Plot:
    entries = cmp.entries
    groups = list(GROUPS)  # every count holds every group, in this order
    fig, axes = _new_figure((SIZE[0] * 1.35, 0.9 + 0.55 * len(groups) * max(1, len(entries) / 2)), ncols=2)
    height = 0.8 / len(entries)
    y = np.arange(len(groups))
    for col, (what, attr) in enumerate((("parameters", "params"), ("MACs", "macs"))):
        ax = axes[0, col]
        for i, e in enumerate(entries):
            vals = [pm[col] for pm in e.result.groups]
            ax.barh(y + (i - (len(entries) - 1) / 2) * height, vals, height=height * 0.95,
                    color=PALETTE[i % len(PALETTE)], label=e.label)
        ax.set_yticks(y, groups)
        ax.invert_yaxis()
        ax.grid(True, axis="x", color="#e3e7ee")
        ax.grid(False, axis="y")
        _fmt_axis(ax, "x", attr)
        ax.set_title(f"{what} per module", fontsize=11, loc="left")
    h, w = cmp.input_size
    axes[0, 1].set_xlabel(f"MACs at {h}x{w}")
    axes[0, 0].set_xlabel("parameters")
    axes[0, 0].legend(loc="lower right", fontsize=8, frameon=False)
    return _save(fig, out_dir, "compare_modules", "Per-module params and MACs",
                 " vs ".join(cmp.labels), wide=True)


def compare_delta(cmp: Comparison, out_dir: Path) -> Plot:
    """Where the parameters went: each config's per-module change against the first one."""
    base, others = cmp.entries[0], cmp.entries[1:]
    groups = list(GROUPS)
    fig, axes = _new_figure((SIZE[0] * 1.35, 1.2 + 0.42 * len(groups) * max(1, len(others) / 1.5)))
    ax = axes[0, 0]
    height = 0.8 / len(others)
    y = np.arange(len(groups))
    span = 1
    for i, e in enumerate(others):
        d = np.array([p - bp for (p, _), (bp, _) in zip(e.result.groups, base.result.groups)])
        span = max(span, int(np.abs(d).max()))
        pos = y + (i - (len(others) - 1) / 2) * height
        if len(others) == 1:  # one change: green for fewer parameters, red for more
            colors = [COLORS["band"] if v < 0 else COLORS["cap"] if v > 0 else "#9aa3b2" for v in d]
            label = None
        else:  # several: each config in its colour of the per-module plot
            colors = [PALETTE[(i + 1) % len(PALETTE)]] * len(d)
            label = e.label
        ax.barh(pos, d, height=height * 0.9, color=colors, edgecolor="white", linewidth=0.4, label=label)
        for py, v in zip(pos, d):
            ax.annotate(f"{v:+,}" if v else "0", (v, py), xytext=(4 if v >= 0 else -4, 0),
                        textcoords="offset points", ha="left" if v >= 0 else "right", va="center",
                        fontsize=9 if len(others) == 1 else 8, color="#333")
    if len(others) > 1:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_xlim(-span * 1.35, span * 1.35)
    ax.set_yticks(y, groups)
    ax.invert_yaxis()
    ax.grid(False, axis="y")
    _fmt_axis(ax, "x", "params")
    total = " ; ".join(f"{e.label}: {e.result.params - base.result.params:+,}" for e in others)
    ax.set_xlabel(f"change in parameters vs {base.label}")
    ax.set_title(f"Where the parameters went ({total})", fontsize=11, loc="left")
    return _save(fig, out_dir, "compare_delta", "Change in parameters per module",
                 f"per-module parameter change relative to {base.label}"
                 + ("; green: fewer, red: more" if len(others) == 1 else ""),
                 wide=True)


def compare_plots(cmp: Comparison, out_dir: Path) -> list[Plot]:
    return [compare_delta(cmp, out_dir), compare_modules(cmp, out_dir)]


def plots_for(obj: StudyReport | Comparison, out_dir: Path) -> Sequence[Plot]:
    return study_plots(obj, out_dir) if isinstance(obj, StudyReport) else compare_plots(obj, out_dir)
