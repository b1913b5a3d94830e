"""How far to trust the proxy: rank agreement between short and long training of the same configs.

`calibrate(...)` picks K exact-budget configs spread over the space's P3 SSH width (not only its
fewest-MACs corner), trains each at the proxy fidelity with several seeds and once at the reference
fidelity, and compares the rankings:

* Kendall tau (tau-b) and Spearman rho between the seed-mean proxy AP and the reference AP, each with
  a percentile bootstrap confidence interval over configs;
* the seed-to-seed Kendall tau of the proxy itself (the noise floor: a proxy cannot rank configs
  better than it agrees with itself under another seed);
* the cost of every run.

With several proxy epoch counts, the cheapest whose tau reaches `min_tau` is named. Every finished
run is appended to OUT/runs.jsonl at once, and each run trains with resumable checkpoints in
OUT/runs/<key>/, so a killed calibration continues at the run in flight.

It sits above both halves it joins: the tuner's proof picks the configs, training's proxy trains
them (imported on use: it needs torch). Neither `tuner` nor `training` imports it.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from featherface_tune.atomic import atomic_write_text
from featherface_tune.errors import InputError, first_line
from featherface_tune.rank_correlation import bootstrap_ci, kendall_tau, seed_kendall_tau, spearman_rho
from featherface_tune.training.spec import Fidelity

PLAN_FILE = "plan.json"
RUNS_FILE = "runs.jsonl"
RESULT_FILE = "calibration.json"
PLAN_FORMAT = "featherface-tune/calibration"


# ---- picking configs ---------------------------------------------------------------------------

def spread_values(values: Sequence[int], k: int) -> list[int]:
    """k values of a sorted domain, evenly spread from its smallest to its largest (distinct while
    the domain has k values)."""
    vals = sorted(values)
    if k >= len(vals):
        return vals
    idx = np.unique(np.round(np.linspace(0, len(vals) - 1, k)).astype(int))
    return [vals[i] for i in idx]


def pick_configs(space: Any, target: int, configs: int, tolerance: int = 0, seed: int = 0,
                 input_size: tuple[int, int] = (640, 640)) -> list[Any]:
    """K (`configs`) distinct configs within `tolerance` of `target`, spread over the P3 SSH width.

    The solver's proof lists every config in the window (`tuner.solve.prove`, its exact set); K P3
    widths are spread evenly over the widths that occur there, and for each one config is drawn
    (seeded) among those with that width, so the sample covers the space, not only its fewest-MACs
    corner. Raises InputError when fewer than K configs exist or the window is too large to list."""
    from featherface_tune.counter.analytic import count

    k = configs
    if k < 2:
        raise InputError(field="configs", value=k, rule="need at least 2 configs to compare rankings")
    rng = random.Random(seed)
    chosen = _pick_from_exact_set(space, target, tolerance, k, rng, input_size)
    if chosen is None:
        raise InputError(field="tolerance", value=tolerance, refs=("space", "tolerance"),
                         rule=f"the space holds too many configs with {target:,} params to list them; "
                              "narrow it with {space} or a smaller {tolerance}")
    chosen = [c for c in chosen if abs(count(c, *input_size).params - target) <= tolerance]
    if len(chosen) < k:
        raise InputError(field="configs", value=k, refs=("configs", "space"),
                         rule=f"only {len(chosen)} configs with {target:,} params (tolerance {tolerance}) found; "
                              "lower {configs} or widen {space}")
    return sorted(chosen, key=lambda c: c.ssh_widths[0])


def _pick_from_exact_set(space: Any, target: int, tolerance: int, k: int, rng: random.Random,
                         input_size: tuple[int, int]) -> list[Any] | None:
    """From the proof's exact set; None when the window holds too many configs to list."""
    from featherface_tune.tuner.solve import prove
    from featherface_tune.tuner.space import BUDGET_KNOBS

    exact = prove(space, target, tolerance, input_size=input_size).exact
    if exact is None or len(exact) == 0:
        return None if exact is None else []
    p3 = np.asarray(exact.budget)[:, BUDGET_KNOBS.index("ssh_channels_p3")]
    widths = sorted({int(v) for v in p3})
    spread = spread_values(widths, k)
    order = spread + [v for v in widths if v not in spread]
    chosen: list[Any] = []
    for w in order:
        if len(chosen) == k:
            break
        idx = [int(i) for i in np.flatnonzero(p3 == w)]
        rng.shuffle(idx)
        for i in idx:
            cfg = exact.config(i)
            if cfg not in chosen:
                chosen.append(cfg)
                break
    return chosen


# ---- the plan and its runs ---------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    config_index: int
    role: str  # "proxy" or "reference"
    epochs: int
    seed: int

    @property
    def key(self) -> str:
        return f"c{self.config_index:02d}-{self.role}-e{self.epochs}-s{self.seed}"


@dataclass(frozen=True)
class CalibrationSettings:
    """Everything that fixes what the runs mean; a resumed calibration must match it."""

    data: str
    target: int
    epochs: tuple[int, ...]
    reference_epochs: int
    seeds: int = 2
    image_size: int = 160
    metric: str = "hard"
    batch_size: int = 8
    subset: float = 1.0
    val_subset: float = 1.0
    val_max_side: int | None = None
    tolerance: int = 0
    sample_seed: int = 0
    space: Mapping[str, Any] | None = None

    def validate(self) -> None:
        from featherface_tune.bounds import MAX_EPOCHS, MAX_SEEDS, check_count, check_int

        if not self.epochs or any(e < 1 for e in self.epochs):
            raise InputError(field="epochs", value=list(self.epochs), rule="give one or more positive epoch counts")
        for e in self.epochs:
            check_int(e, "epochs", 1, MAX_EPOCHS)
        check_int(self.reference_epochs, "reference_epochs", 1, MAX_EPOCHS)
        check_int(self.seeds, "seeds", 1, MAX_SEEDS)
        check_count(self.target, "target")  # bounded as the search's target is
        check_int(self.tolerance, "tolerance", 0, self.target)
        if self.reference_epochs <= max(self.epochs):
            raise InputError(field="reference_epochs", value=self.reference_epochs, refs=("epochs",),
                             rule=f"must exceed the proxy {{epochs}} ({max(self.epochs)})")
        self.fidelity(self.epochs[0], 0)  # the proxy's own checks (image size, metric, subsets)

    def fidelity(self, epochs: int, seed: int) -> Fidelity:
        return Fidelity.from_mapping({
            "epochs": epochs, "seed": seed, "image_size": self.image_size, "metric": self.metric,
            "batch_size": self.batch_size, "subset": self.subset, "val_subset": self.val_subset,
            "val_max_side": self.val_max_side, "eval_every": epochs})

    def runs(self, n_configs: int) -> list[RunSpec]:
        """Cheapest first: every proxy fidelity (ascending epochs, seeds), then the references."""
        out = [RunSpec(c, "proxy", e, s) for e in sorted(set(self.epochs)) for s in range(self.seeds)
               for c in range(n_configs)]
        return out + [RunSpec(c, "reference", self.reference_epochs, 0) for c in range(n_configs)]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["epochs"] = list(self.epochs)
        d["space"] = dict(self.space) if self.space is not None else None
        return d


def read_runs(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished runs by key. A line that is not a whole run record (a torn last line from a kill, a
    hand edit: no `seconds`, a list, bytes that are not UTF-8) is ignored: that run is redone."""
    path = Path(out_dir) / RUNS_FILE
    runs: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return runs
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if _is_run_record(rec):
            runs[rec["key"]] = rec
    return runs


def _is_run_record(rec: Any) -> bool:
    """A dict with what `analyse` and the tables read: a str key, a role, finite value and seconds."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    return (isinstance(rec, dict) and isinstance(rec.get("key"), str) and rec.get("role") in ("proxy", "reference")
            and number(rec.get("value")) and number(rec.get("seconds")) and rec["seconds"] >= 0
            and isinstance(rec.get("ap", {}), dict))


def read_plan(folder: Path, field: str | None = None) -> tuple[dict[str, Any], CalibrationSettings, list[Any]]:
    """(settings as stored, as read, configs) of FOLDER/plan.json, or InputError about the argument
    `field` (the folder) saying what is wrong: not UTF-8, not JSON, nested too deeply, not a plan,
    settings beyond the bounds, bad configs."""
    from featherface_tune.models.config import from_mapping
    from featherface_tune.textfile import parse_json, read_text

    folder = Path(folder)

    def damaged(rule: str) -> InputError:
        if field is None:  # a folder given as itself (report DIR): its path leads the message
            return InputError(f"{str(folder)!r}: {rule}")
        return InputError(field=field, value=folder, rule=rule)

    try:
        plan = parse_json(read_text(folder / PLAN_FILE, PLAN_FILE), PLAN_FILE)
    except InputError as exc:  # unreadable, not UTF-8, not JSON, too deep: said about plan.json
        raise damaged(str(exc)) from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise damaged(f"{PLAN_FILE} is not a calibration plan")
    stored, configs = plan.get("settings"), plan.get("configs")
    if not isinstance(stored, dict) or not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise damaged(f"{PLAN_FILE} is damaged (settings must be an object, configs a list of objects)")
    try:
        settings = CalibrationSettings(**{**stored, "epochs": tuple(stored.get("epochs") or ())})
        try:
            settings.validate()  # a hand-edited plan meets the bounds the options do (seeds, epochs, target)
        except InputError as exc:  # named as the plan's keys are (its Python names)
            raise damaged(f"{PLAN_FILE} holds settings beyond the bounds: {exc}") from None
        return stored, settings, [from_mapping(c, source=f"{PLAN_FILE} config") for c in configs]
    except (TypeError, ValueError) as exc:  # unknown or missing settings, unhashable values
        raise damaged(f"{PLAN_FILE} is damaged ({first_line(exc, 160)})") from None


def _append_run(out_dir: Path, rec: Mapping[str, Any]) -> None:
    path = Path(out_dir) / RUNS_FILE
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # a full disk: the run is redone on resume (a torn line is ignored)
        raise InputError(f"cannot record a finished run in {str(path)!r}: {exc.strerror or exc}") from None


def open_plan(out_dir: Path, settings: CalibrationSettings, make_configs: Callable[[], list[Any]]) -> list[Any]:
    """The plan's configs: read from OUT/plan.json when it exists (settings must match), else picked
    now and written there."""

    out_dir = Path(out_dir)
    path = out_dir / PLAN_FILE
    if path.is_file():
        old, _, configs = read_plan(out_dir, "out_dir")
        new = settings.to_json()
        for key in new:
            if old.get(key) != new[key]:
                raise InputError(field="out_dir", value=out_dir, refs=("out_dir",),
                                 rule=f"holds a calibration with {key}={old.get(key)!r}, not {new[key]!r}; "
                                      "use another {out_dir} or the same options to resume")
        return configs
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(field="out_dir", value=out_dir, rule="exists and is not a directory")
    configs = make_configs()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only or full disk
        raise InputError(field="out_dir", value=out_dir,
                         rule=f"cannot create the folder: {exc.strerror or exc}") from None
    atomic_write_text(path, json.dumps({"format": PLAN_FORMAT, "settings": settings.to_json(),
                                         "configs": [c.to_dict() for c in configs]}, indent=2))
    return configs


# ---- analysis ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FidelityResult:
    epochs: int
    configs: int  # configs with every run of this fidelity and their reference done
    kendall_tau: float
    kendall_tau_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]
    seed_kendall_tau: float
    proxy_seconds_per_config: float  # mean training + evaluation time of one proxy run
    proxy_seconds: float  # all this fidelity's runs together

    def to_json(self) -> dict[str, Any]:
        return {k: (_num(v) if isinstance(v, float) else [_num(x) for x in v] if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


def _num(v: float) -> float | None:
    return None if not math.isfinite(v) else round(v, 4)


def analyse(settings: CalibrationSettings, n_configs: int, runs: Mapping[str, Mapping[str, Any]],
            min_tau: float | None = None, n_boot: int = 2000) -> dict[str, Any]:
    """Rank agreement of each proxy fidelity with the reference, over configs whose runs are done."""
    ref = {c: runs[RunSpec(c, "reference", settings.reference_epochs, 0).key]["value"]
           for c in range(n_configs) if RunSpec(c, "reference", settings.reference_epochs, 0).key in runs}
    fids: list[FidelityResult] = []
    for e in sorted(set(settings.epochs)):
        rows, per_seed, secs = [], [], []
        for c in range(n_configs):
            keys = [RunSpec(c, "proxy", e, s).key for s in range(settings.seeds)]
            secs += [runs[k]["seconds"] for k in keys if k in runs]
            if c in ref and all(k in runs for k in keys):
                vals = [runs[k]["value"] for k in keys]
                per_seed.append(vals)
                rows.append((float(np.mean(vals)), ref[c]))
        px = [r[0] for r in rows]
        rf = [r[1] for r in rows]
        fids.append(FidelityResult(
            epochs=e, configs=len(rows), kendall_tau=kendall_tau(px, rf),
            kendall_tau_ci=bootstrap_ci(px, rf, kendall_tau, n_boot), spearman=spearman_rho(px, rf),
            spearman_ci=bootstrap_ci(px, rf, spearman_rho, n_boot),
            seed_kendall_tau=seed_kendall_tau(per_seed) if per_seed else math.nan,
            proxy_seconds_per_config=float(np.mean(secs)) * settings.seeds if secs else math.nan,
            proxy_seconds=float(np.sum(secs))))
    chosen = None
    if min_tau is not None:
        chosen = next((f for f in fids if math.isfinite(f.kendall_tau) and f.kendall_tau >= min_tau), None)
    headline = chosen or max(fids, key=lambda f: f.kendall_tau if math.isfinite(f.kendall_tau) else -2)
    ref_secs = [r["seconds"] for r in runs.values() if r.get("role") == "reference"]
    return {
        "kendall_tau": _num(headline.kendall_tau), "kendall_tau_ci": [_num(v) for v in headline.kendall_tau_ci],
        "spearman": _num(headline.spearman), "spearman_ci": [_num(v) for v in headline.spearman_ci],
        "seed_kendall_tau": _num(headline.seed_kendall_tau), "epochs": headline.epochs,
        "min_tau": min_tau, "chosen_epochs": chosen.epochs if chosen else None,
        "fidelities": [f.to_json() for f in fids],
        "reference_epochs": settings.reference_epochs,
        "reference_seconds_per_config": _num(float(np.mean(ref_secs))) if ref_secs else None,
        "configs": n_configs, "runs_done": len(runs), "runs_planned": len(settings.runs(n_configs)),
    }


# ---- running ------------------------------------------------------------------------------------

@dataclass
class CalibrationResult:
    settings: CalibrationSettings
    configs: list[Any]
    runs: list[dict[str, Any]]
    summary: dict[str, Any]
    wall_seconds: float  # this invocation
    resumed_runs: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        from featherface_tune.counter.analytic import count

        cfgs = []
        for i, c in enumerate(self.configs):
            r = count(c, 640, 640)
            cfgs.append({"index": i, "params": r.params, "macs": r.macs, "config": c.to_dict()})
        return {**self.summary, "runs": self.runs, "config_list": cfgs, "settings": self.settings.to_json(),
                "wall_seconds": round(self.wall_seconds, 2), "resumed_runs": self.resumed_runs,
                "device": self.device, "synthetic_data": self.extra.get("synthetic", None)}


def _is_synthetic(data_dir: Path) -> bool:
    """demo-data's folders say so in the first line of their README.txt."""
    readme = Path(data_dir) / "README.txt"
    try:
        return readme.is_file() and "SYNTHETIC" in readme.read_text(encoding="utf-8")[:200]
    except OSError:
        return False


def run_calibration(settings: CalibrationSettings, out_dir: Path, configs: Sequence[Any],
                    device: str = "cpu", amp: str = "auto", min_tau: float | None = None,
                    on_run: Callable[[RunSpec, dict[str, Any] | None, int, int], None] | None = None
                    ) -> CalibrationResult:
    """Train every planned run not yet in OUT/runs.jsonl (resuming the one in flight from its
    checkpoint), then analyse. on_run(spec, record or None (starting), done, total) reports progress."""
    from featherface_tune.data.readers import read_any
    from featherface_tune.training.proxy import load_val, run_proxy

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    data_dir = Path(settings.data)
    done = read_runs(out_dir)
    plan = settings.runs(len(configs))
    todo = [r for r in plan if r.key not in done]
    resumed = len(plan) - len(todo)
    if todo:
        train_records = read_any(data_dir, "train")
        val = load_val(data_dir, settings.val_subset, 0, settings.val_max_side)
    for spec in todo:
        if on_run is not None:
            on_run(spec, None, len(done), len(plan))
        run_dir = out_dir / "runs" / spec.key
        resume = (run_dir / "last.pt").is_file()
        fid = settings.fidelity(spec.epochs, spec.seed)
        t = time.perf_counter()
        res = run_proxy(configs[spec.config_index], data_dir, fid, out_dir=run_dir,
                        train_records=train_records, val=val, device=device, amp=amp, resume=resume)
        rec = {"key": spec.key, "config_index": spec.config_index, "role": spec.role, "epochs": spec.epochs,
               "seed": spec.seed, "value": float(res.value), "metric": settings.metric,
               "ap": {k: float(v) for k, v in res.ap.items()},
               "train_seconds": round(res.train.seconds, 3), "eval_seconds": round(res.eval_seconds, 3),
               "seconds": round(time.perf_counter() - t, 3), "resumed": resume, "device": device,
               "final_loss": res.train.history[-1].loss if res.train.history else None}
        _append_run(out_dir, rec)
        done[spec.key] = rec
        if on_run is not None:
            on_run(spec, rec, len(done), len(plan))
    summary = analyse(settings, len(configs), done, min_tau)
    runs = [done[r.key] for r in plan if r.key in done]
    result = CalibrationResult(settings, list(configs), runs, summary, time.perf_counter() - t0, resumed, device,
                               {"synthetic": _is_synthetic(data_dir)})
    atomic_write_text(out_dir / RESULT_FILE, json.dumps(result.to_json(), indent=2))
    return result


def load_calibration(folder: Path, min_tau: float | None = None) -> dict[str, Any]:
    """The results of a calibration folder (finished or not), recomputed from plan.json + runs.jsonl."""
    folder = Path(folder)
    path = folder / PLAN_FILE
    if not path.is_file():
        raise InputError(f"{str(folder)!r} holds no calibration ({PLAN_FILE} missing)")
    _, settings, configs = read_plan(folder)
    runs = read_runs(folder)
    if min_tau is None and (folder / RESULT_FILE).is_file():
        try:
            found = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8")).get("min_tau")
            min_tau = float(found) if isinstance(found, (int, float)) and -1 <= found <= 1 else None
        except (OSError, ValueError, RecursionError, AttributeError):  # damaged: recomputed without it
            min_tau = None
    summary = analyse(settings, len(configs), runs, min_tau)
    order = [r.key for r in settings.runs(len(configs))]
    return calibration_json(CalibrationResult(settings, configs, [runs[k] for k in order if k in runs], summary,
                                              0.0, extra={"synthetic": _is_synthetic(Path(settings.data))}))


def calibration_json(res: CalibrationResult) -> dict[str, Any]:
    """What `calibrate` and `report` show of a calibration: its result, timed by its runs' own seconds
    (the same whether it ran now, resumed, or is read back)."""
    d = res.to_json()
    d.pop("wall_seconds")
    d.pop("resumed_runs")
    d["wall_seconds_runs"] = round(sum(r["seconds"] for r in d["runs"]), 1)
    return d


# ---- presentation ---------------------------------------------------------------------------------

def _f(v: Any, nd: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _ci(v: Iterable[Any]) -> str:
    lo, hi = list(v)
    return "-" if lo is None or hi is None else f"[{lo:.2f}, {hi:.2f}]"


def tables(data: Mapping[str, Any]) -> list[Any]:
    """Rich tables of a calibration: agreement per proxy fidelity, then AP per config."""
    from rich.table import Table

    s = data["settings"]
    synth = " (synthetic data)" if data.get("synthetic_data") else ""
    t = Table(title=f"proxy vs reference ({s['reference_epochs']} epochs) ranking, "
                    f"{data['configs']} configs, {s['metric']} AP{synth}",
              caption=f"{data['runs_done']}/{data['runs_planned']} runs done; tau = Kendall tau-b, "
                      "rho = Spearman; 95% bootstrap CIs over configs; seed tau = proxy vs itself")
    for col in ("proxy epochs", "configs", "tau", "tau 95% CI", "rho", "rho 95% CI", "seed tau",
                "s / config", "chosen"):
        t.add_column(col, justify="right")
    for f in data["fidelities"]:
        chosen = "yes" if data.get("chosen_epochs") == f["epochs"] else ""
        t.add_row(str(f["epochs"]), str(f["configs"]), _f(f["kendall_tau"]), _ci(f["kendall_tau_ci"]),
                  _f(f["spearman"]), _ci(f["spearman_ci"]), _f(f["seed_kendall_tau"]),
                  _f(f["proxy_seconds_per_config"], 1), chosen)
    c = Table(title=f"{s['metric']} AP per config{synth}")
    c.add_column("#", justify="right")
    c.add_column("params", justify="right")
    c.add_column("SSH P3/P4/P5")
    c.add_column("neck")
    for e in sorted(set(s["epochs"])):
        c.add_column(f"proxy {e} ep (seeds)", justify="right")
    c.add_column(f"reference {s['reference_epochs']} ep", justify="right")
    by_key = {r["key"]: r for r in data["runs"]}
    for cfg in data["config_list"]:
        i, cd = cfg["index"], cfg["config"]
        ssh = cd["ssh_channels"]
        ssh_txt = "/".join(str(v) for v in (ssh if isinstance(ssh, list) else [ssh] * 3))
        neck = f"{cd['neck']} {cd['neck_channels']}" + (f" x{cd['bifpn_repeats']}" if cd["neck"] == "bifpn" else "")
        row = [str(i), f"{cfg['params']:,}", ssh_txt, neck]
        for e in sorted(set(s["epochs"])):
            vals = [by_key.get(RunSpec(i, "proxy", e, sd).key) for sd in range(s["seeds"])]
            row.append(" ".join(_f(v["value"]) if v else "-" for v in vals))
        r = by_key.get(RunSpec(i, "reference", s["reference_epochs"], 0).key)
        row.append(_f(r["value"]) if r else "-")
        c.add_row(*row)
    return [t, c]
