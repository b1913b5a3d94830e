"""Report data: a featherface-tune Optuna study, or a set of configs, turned into pandas DataFrames.

Nothing here prints or draws; `render`, `plots` and `bundle` present what this module computes.

A study is reportable when it carries the record the search writes:
``study.user_attrs["featherface_tune"] = {"version": "1", "target", "tolerance", "input_size",
"objectives", "max_macs", "space", "dcn_macs", "reference"}`` (a record without ``dcn_macs`` is a legacy
study whose MACs are dense; the report says so) and every trial's user attrs hold ``config``, ``params``,
``macs``, ``delta``, ``feasible``, ``modules`` (optionally ``latency_ms``, ``proxy_ap``,
``fail_reason``).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from featherface_tune.counter.analytic import GROUPS, CountResult, count
from featherface_tune.errors import ConfigError, InputError, first_line
from featherface_tune.models.config import FIELD_NAMES, FeatherFaceConfig, from_mapping
from featherface_tune.counter import conventions
from featherface_tune.counter.conventions import TRUE, Convention, get_convention
from featherface_tune.models.config import DEFAULT_INPUT
from featherface_tune.tuner.records import (
    LEGACY_DCN_MACS, OBJECTIVES, RECORD_VERSION, STUDY_ATTR as ATTR_KEY, StudySpec, TrialRecord, as_float,
    as_int, is_legacy, window_text,
)
from featherface_tune.tuner import registry
from featherface_tune.tuner.ranking import config_key
from featherface_tune.tuner.storage_url import default_storage_url, journal_path, redact

DEFAULT_TOP = 10
# Metrics a trial may record, in display order; "higher is better" only for proxy AP.
METRICS = ("params", "delta", "macs", "latency_ms", "proxy_ap")
MAXIMIZED_METRICS = tuple(attr for attr, direction in OBJECTIVES.values() if direction == "maximize")
# objective name (as the search records it, or its attribute name) -> the trial attribute holding its value
OBJECTIVE_ATTRS = {**{name: attr for name, (attr, _) in OBJECTIVES.items()}, "latency_ms": "latency_ms"}


# ---- storage and study loading ----------------------------------------------------------------

def sqlite_path(url: str) -> Path | None:
    """The file behind an ``sqlite:///`` URL (None for other back-ends and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def _check_storage_file(url: str) -> None:
    """Refuse a missing file, or one that is not an Optuna database, before Optuna sees it
    (Optuna would otherwise create an empty storage there)."""
    journal = journal_path(url)
    if journal is not None:
        if not journal.is_file():
            raise InputError(field="storage", value=url, refs=("storage",),
                             rule="its file does not exist; run `featherface-tune search` first or give another {storage}")
        return
    path = sqlite_path(url)
    if path is None:
        return
    if not path.exists():
        raise InputError(field="storage", value=url, refs=("storage",),
                         rule="its file does not exist; run `featherface-tune search` first or give another {storage}")
    if not path.is_file():
        raise InputError(f"storage {str(path)!r} is not a file")
    with path.open("rb") as fh:
        head = fh.read(16)
    if head and head != b"SQLite format 3\x00":
        raise InputError(f"storage file {str(path)!r} is not an SQLite database")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='studies'").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise InputError(f"storage file {str(path)!r} cannot be read: {exc}") from None
    if found is None:
        raise InputError(f"storage file {str(path)!r} is not an Optuna database (no studies table)")


def _quiet_optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _existing_storage(url: str) -> Any:
    """The Optuna storage behind a URL, opened the way `featherface-tune search` opens it
    (`tuner.storage.open_storage`), after checking that a file storage exists (a report never creates one)."""
    from featherface_tune.tuner.storage import open_storage as tuner_open_storage

    _check_storage_file(url)
    _quiet_optuna()
    storage, _info = tuner_open_storage(url)
    return storage


def study_names(storage: Any, url: str = "") -> list[str]:
    """Names of the studies in an opened storage (one-line InputError when it cannot be read)."""
    optuna = _quiet_optuna()
    try:
        return sorted(optuna.study.get_all_study_names(storage=storage))
    except Exception as exc:  # noqa: BLE001 - any back-end failure becomes one line
        raise InputError(f"cannot read storage {redact(url)}: {first_line(exc)}") from None


def load_study(url: str, name: str | None = None) -> Any:
    """Load an existing study by name; without a name, the storage's only study. (The search's
    `tuner.study.open_study` creates or resumes one; a report only reads.)"""
    storage = _existing_storage(url)
    names = study_names(storage, url)
    where = redact(url)
    if name is None:
        if not names:
            raise InputError(f"storage {where} holds no studies; run `featherface-tune search` first")
        if len(names) > 1:
            raise InputError(field="study", rule=f"storage {where} holds {len(names)} studies; pick one: "
                                                 + ", ".join(names))
        name = names[0]
    elif name not in names:
        avail = ", ".join(names) if names else "none"
        raise InputError(f"no study named {name!r} in {where}; available: {avail}")
    optuna = _quiet_optuna()
    try:
        return optuna.load_study(study_name=name, storage=storage)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot load study {name!r} from {where}: {first_line(exc)}") from None


# ---- the study record ----------------------------------------------------------------------------

# The search's own frozen study record; the report only adds validation when reading it.
StudyRecord = StudySpec


def parse_record(name: str, attrs: Mapping[str, Any]) -> StudyRecord:
    """The record of study `name`, or a one-line InputError saying what is wrong with it."""
    if ATTR_KEY not in attrs:
        raise InputError(f"study {name!r} is not a featherface-tune study (it has no {ATTR_KEY!r} "
                         "record; it was made by another tool); only studies from "
                         "`featherface-tune search` can be reported")
    rec = attrs[ATTR_KEY]
    bad = f"study {name!r} has a malformed {ATTR_KEY!r} record"
    if not isinstance(rec, Mapping):
        raise InputError(f"{bad}: expected a table, got {type(rec).__name__}")
    version = str(rec.get("version", ""))
    if version != RECORD_VERSION:
        raise InputError(f"study {name!r} has record version {version or 'none'!r}; this "
                         f"featherface-tune reads version {RECORD_VERSION!r}")
    for key in ("target", "tolerance", "input_size", "objectives"):
        if key not in rec:
            raise InputError(f"{bad}: missing {key!r}")
    target, tol = as_int(rec["target"]), as_int(rec["tolerance"])
    if target is None or target < 1:
        raise InputError(f"{bad}: target={rec['target']!r} must be a positive integer")
    if tol is None or tol < 0:
        raise InputError(f"{bad}: tolerance={rec['tolerance']!r} must be a non-negative integer")
    size = rec["input_size"]
    if (not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2
            or any(as_int(v) is None or as_int(v) < 1 for v in size)):  # type: ignore[operator]
        raise InputError(f"{bad}: input_size={size!r} must be [height, width]")
    objs = rec["objectives"]
    if isinstance(objs, str):
        objs = [objs]
    if not isinstance(objs, Sequence) or not objs or not all(isinstance(o, str) for o in objs):
        raise InputError(f"{bad}: objectives={objs!r} must be a list of names")
    max_macs = rec.get("max_macs")
    if max_macs is not None and as_int(max_macs) is None:
        raise InputError(f"{bad}: max_macs={max_macs!r} must be an integer or null")
    space = rec.get("space") or {}
    try:
        counting = conventions.from_attr(rec, legacy_dcn_macs=LEGACY_DCN_MACS)
    except ConfigError as exc:
        raise InputError(f"{bad}: {exc}") from None
    ref = rec.get("reference")
    return StudyRecord(target=target, tolerance=tol,
                       input_size=(int(size[0]), int(size[1])), objectives=tuple(objs),
                       max_macs=as_int(max_macs), space=dict(space) if isinstance(space, Mapping) else {},
                       version=version, counting=counting,
                       reference=dict(ref) if isinstance(ref, Mapping) else None)


# ---- trials --------------------------------------------------------------------------------------

def value_column(objective: str) -> str:
    """Column holding the Optuna objective value of `objective`."""
    return f"value_{objective}"


def objective_series(df: pd.DataFrame, objective: str) -> pd.Series:
    """An objective per trial as floats: the measured attribute (what the search ranks by), else
    the Optuna value; NaN where neither is finite."""
    obj = registry.get(objective)  # the attribute the objective is recorded under (registry)
    col = obj.attr if obj is not None else OBJECTIVE_ATTRS.get(objective)
    val = pd.to_numeric(df[value_column(objective)], errors="coerce") if value_column(objective) in df else None
    if col is not None and col in df:
        s = pd.to_numeric(df[col], errors="coerce").astype("float64")
        return s.fillna(val) if val is not None else s
    return val.astype("float64") if val is not None else pd.Series(np.nan, index=df.index)


def _config_cell(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def trials_frame(records: Sequence[TrialRecord], record: StudyRecord) -> pd.DataFrame:
    """One row per trial record (`TrialRecord.from_trial`, the search's own reader): number, state,
    feasibility, metrics, objective values, config fields, failure reason. Integer counts use pandas'
    nullable Int64 (missing for failed trials)."""
    rows: list[dict[str, Any]] = []
    config_keys: list[str] = []
    for t in records:
        cfg = dict(t.config or {})
        for k in cfg:
            if k not in config_keys:
                config_keys.append(k)
        values = list(t.values) if t.values is not None else []
        row: dict[str, Any] = {
            "trial": t.number, "state": t.state, "feasible": t.feasible and t.state == "COMPLETE",
            "params": t.params, "delta": t.delta, "macs": t.macs,
            "latency_ms": t.latency_ms, "proxy_ap": t.proxy_ap,
        }
        for i, obj in enumerate(record.objectives):
            row[value_column(obj)] = as_float(values[i]) if i < len(values) else None
        row["fail_reason"] = t.fail_reason
        row["_config"] = cfg
        row["_modules"] = dict(t.modules)
        rows.append(row)
    ordered = [k for k in FIELD_NAMES if k in config_keys] + [k for k in config_keys if k not in FIELD_NAMES]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for k in ordered:  # object columns: ints stay ints, lists stay lists, missing is None
        df[k] = pd.Series([_config_cell(c.get(k)) for c in df["_config"]], index=df.index, dtype=object)
    for col in ("trial", "params", "delta", "macs"):
        df[col] = pd.array([as_int(v) for v in df[col]], dtype="Int64")
    for col in ("latency_ms", "proxy_ap", *[value_column(o) for o in record.objectives]):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["feasible"] = df["feasible"].astype(bool)
    return df.sort_values("trial", kind="stable").reset_index(drop=True)


def config_columns(df: pd.DataFrame) -> list[str]:
    """The config-field columns of a trials frame."""
    return [c for c in df.columns if c in FIELD_NAMES]


def varying_fields(df: pd.DataFrame) -> tuple[list[str], dict[str, Any]]:
    """(fields whose value differs between the recorded configs, {field: value} of the fields
    every config that names them agrees on)."""
    seen: dict[str, dict[str, Any]] = {}
    for cfg in (df["_config"] if "_config" in df else []):
        for k, v in cfg.items():
            seen.setdefault(k, {})[repr(_config_cell(v))] = _config_cell(v)
    varying = [k for k in config_columns(df) if len(seen.get(k, {})) > 1]
    fixed = {k: next(iter(seen[k].values())) for k in config_columns(df) if len(seen.get(k, {})) == 1}
    return varying, fixed


def direction_of(objective: str, study_direction: str | None = None) -> str:
    """'minimize' or 'maximize' for an objective (the study's own direction wins)."""
    if study_direction in ("minimize", "maximize"):
        return study_direction
    return registry.direction(objective)


def rank_feasible(df: pd.DataFrame, records: Sequence[TrialRecord], objectives: Sequence[str],
                  directions: Sequence[str]) -> pd.DataFrame:
    """The rows of `df` for the search's own ranking of `records` (`tuner.ranking.rank_feasible`):
    feasible complete trials with distinct configs, best first. Adds the column ``pareto`` (bool;
    False throughout for a single objective)."""
    from featherface_tune.tuner.ranking import rank_feasible as rank_records

    if df.empty:
        return df.assign(pareto=pd.Series(dtype=bool))
    ranks = rank_records(records, objectives, directions)
    rows = df.set_index("trial", drop=False)
    ok = rows.loc[[r.number for _, r in ranks]].reset_index(drop=True) if ranks else df.iloc[0:0].copy()
    ok["pareto"] = [k == 0 for k, _ in ranks] if len(objectives) > 1 else False
    return ok


def _public(df: pd.DataFrame) -> pd.DataFrame:
    return df[[c for c in df.columns if not c.startswith("_")]]


def top_columns(df: pd.DataFrame, record: StudyRecord, varying: Sequence[str]) -> list[str]:
    """Columns of the top-configs table: trial, metrics measured, objectives not among the
    metrics, then the widths (config fields that vary; neck and SSH widths when none do)."""
    cols = ["trial", "params", "delta", "macs"]
    for m in ("latency_ms", "proxy_ap"):
        if m in df and df[m].notna().any():
            cols.append(m)
    for obj in record.objectives:  # e.g. closest, Python callables: shown by their Optuna value
        if OBJECTIVE_ATTRS.get(obj) not in df and value_column(obj) in df:
            cols.append(value_column(obj))
    widths = list(varying) or [c for c in ("neck_channels", "ssh_channels") if c in df]
    return cols + widths


# ---- the report ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Breakdown:
    """Per-module params and MACs of one config (recomputed by the analytic counter)."""

    label: str
    config: FeatherFaceConfig
    result: CountResult
    trial: int | None = None

    @property
    def frame(self) -> pd.DataFrame:
        return breakdown_frame(self.result)


def breakdown_frame(result: CountResult) -> pd.DataFrame:
    rows = []
    for name, c in result.modules.items():
        rows.append({"module": name, "params": c.params,
                     "params_pct": 100.0 * c.params / result.params if result.params else 0.0,
                     "macs": c.macs, "macs_pct": 100.0 * c.macs / result.macs if result.macs else 0.0})
    rows.append({"module": "total", "params": result.params, "params_pct": 100.0,
                 "macs": result.macs, "macs_pct": 100.0})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class StudyReport:
    """Everything a study report shows. The derived tables are computed on first access and kept
    (`cached_property`); treat them as read-only."""

    name: str
    storage: str
    record: StudyRecord
    directions: tuple[str, ...]
    trials: pd.DataFrame = field(hash=False)      # every trial (config fields as columns)
    ranked: pd.DataFrame = field(hash=False)      # feasible complete trials, best first
    top_n: int
    varying: tuple[str, ...]
    fixed: Mapping[str, Any] = field(hash=False)
    chosen: Breakdown | None
    warnings: tuple[str, ...] = ()

    @property
    def multi_objective(self) -> bool:
        return len(self.record.objectives) > 1

    @cached_property
    def counts(self) -> dict[str, int]:
        df = self.trials
        states = Counter(df["state"]) if not df.empty else Counter()
        complete = int(states.get("COMPLETE", 0))
        feasible = int(df["feasible"].sum()) if not df.empty else 0
        return {"trials": len(df), "complete": complete, "feasible": feasible,
                "infeasible": complete - feasible, "failed": int(states.get("FAIL", 0)),
                "pruned": int(states.get("PRUNED", 0)),
                "running": int(states.get("RUNNING", 0) + states.get("WAITING", 0))}

    @cached_property
    def counts_frame(self) -> pd.DataFrame:
        c = self.counts
        total = c["trials"] or 1
        meaning = {
            "feasible": f"complete, {budget_text(self.record)}",
            "infeasible": "complete but outside the budget",
            "failed": "the trial raised (see fail reasons)",
            "pruned": "stopped early by the search",
            "running": "still running or waiting",
        }
        rows = [{"outcome": k, "trials": c[k], "share_pct": 100.0 * c[k] / total, "meaning": v}
                for k, v in meaning.items()]
        rows.append({"outcome": "total", "trials": c["trials"], "share_pct": 100.0, "meaning": ""})
        return pd.DataFrame(rows)

    @cached_property
    def top(self) -> pd.DataFrame:
        cols = top_columns(self.trials, self.record, self.varying)
        top = self.ranked.head(self.top_n)
        if self.multi_objective:
            cols = cols + ["pareto"]
        return top[[c for c in cols if c in top.columns]].reset_index(drop=True)

    @cached_property
    def pareto(self) -> pd.DataFrame | None:
        """The Pareto front (multi-objective studies), sorted by the first objective."""
        if not self.multi_objective:
            return None
        cols = top_columns(self.trials, self.record, self.varying)
        front = self.ranked[self.ranked["pareto"]] if not self.ranked.empty else self.ranked
        return front[[c for c in cols if c in front.columns]].reset_index(drop=True)

    @cached_property
    def closest(self) -> pd.DataFrame:
        """Complete trials nearest the target (what to look at while nothing is feasible)."""
        df = self.trials
        if df.empty:
            return df
        done = df[(df["state"] == "COMPLETE") & df["delta"].notna()].copy()
        done = done[~done["_config"].map(config_key).duplicated(keep="first")]
        done["_abs"] = done["delta"].abs().astype("int64")
        done = done.sort_values(["_abs", "macs", "trial"], kind="stable").head(self.top_n)
        cols = top_columns(self.trials, self.record, self.varying)
        return done[[c for c in cols if c in done.columns]].reset_index(drop=True)

    @cached_property
    def failures(self) -> pd.DataFrame:
        df = self.trials
        if df.empty or "fail_reason" not in df:
            return pd.DataFrame(columns=["reason", "trials", "states"])
        sub = df[df["fail_reason"].notna()]
        rows = []
        for reason, grp in sub.groupby("fail_reason", sort=False):
            rows.append({"reason": reason, "trials": len(grp),
                         "states": ", ".join(sorted(set(grp["state"])))})
        out = pd.DataFrame(rows, columns=["reason", "trials", "states"])
        return out.sort_values("trials", ascending=False, kind="stable").reset_index(drop=True)

    @cached_property
    def summary(self) -> dict[str, Any]:
        r = self.record
        best = self.ranked.iloc[0] if not self.ranked.empty else None
        return {
            "study": self.name, "storage": self.storage,
            "target": r.target, "tolerance": r.tolerance,
            "budget": budget_text(r),
            "max_macs": r.max_macs,
            "input_size": f"{r.input_size[0]}x{r.input_size[1]}",
            "objectives": ", ".join(f"{o} ({d})" for o, d in zip(r.objectives, self.directions)),
            "best_trial": int(best["trial"]) if best is not None else None,
            "fixed_fields": ", ".join(f"{k}={_fmt_field(v)}" for k, v in self.fixed.items()),
        }

    @property
    def trials_public(self) -> pd.DataFrame:
        return _public(self.trials)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "study",
            "study": self.name,
            "storage": self.storage,
            "record": self.record.to_attr(),
            "directions": list(self.directions),
            "counts": self.counts,
            "top": frame_records(self.top),
            "pareto": frame_records(self.pareto) if self.pareto is not None else None,
            "failures": frame_records(self.failures),
            "closest": frame_records(self.closest) if self.ranked.empty else None,
            "chosen": None if self.chosen is None else {
                "trial": self.chosen.trial, "config": self.chosen.config.to_dict(),
                "count": self.chosen.result.to_json()},
            "trials": frame_records(self.trials_public),
            "warnings": list(self.warnings),
        }


def budget_text(r: StudyRecord) -> str:
    text = f"{'' if r.tolerance else 'exactly '}{window_text(r.target, r.tolerance)} params"
    return text + (f", MACs <= {r.max_macs:,}" if r.max_macs else "")


def _fmt_field(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as JSON-ready records (pandas' own JSON writer: NaN/NA -> null)."""
    import json

    if df.empty:
        return []
    return json.loads(df.to_json(orient="records", force_ascii=False))


def config_of(row: Mapping[str, Any] | pd.Series, label: str) -> FeatherFaceConfig:
    cfg = row["_config"]
    if not cfg:
        raise InputError(f"{label} has no recorded config")
    try:
        return from_mapping(cfg, source=label)
    except ConfigError as exc:
        raise InputError(f"{label}: recorded config is not valid: {exc}") from None


def build_report(study: Any, storage: str, *, top: int = DEFAULT_TOP, trial: int | None = None,
                 input_size: tuple[int, int] | None = None, dcn_macs: str | None = None) -> StudyReport:
    """Everything the report shows about one loaded Optuna study. `dcn_macs`: the DCN MAC convention
    of the breakdown (default: the study's own; the study's convention either way)."""
    record = parse_record(study.study_name, study.user_attrs)
    counting = record.counting if dcn_macs is None else get_convention(record.convention, dcn_macs)
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise InputError(field="study", value=study.study_name, refs=("study",),
                         rule="is empty (no trials yet); run `featherface-tune search` with this {study} first")
    if top < 1:
        raise InputError(field="top", value=top, rule="must be at least 1")
    sdirs = [d.name.lower() for d in study.directions]
    directions = tuple(direction_of(o, sdirs[i] if i < len(sdirs) else None)
                       for i, o in enumerate(record.objectives))
    records = [TrialRecord.from_trial(t, record) for t in trials]
    df = trials_frame(records, record)
    ranked = rank_feasible(df, records, record.objectives, directions)
    varying, fixed = varying_fields(df)
    warnings: list[str] = []
    if is_legacy(study.user_attrs[ATTR_KEY]):
        warnings.append(f"study {study.study_name!r} is a legacy study (stored before full compute, no "
                        f"dcn_macs): its MACs are dense (DCN offset and modulator convs left out)")
    if len(sdirs) != len(record.objectives):
        warnings.append(f"the record names {len(record.objectives)} objectives but the study has "
                        f"{len(sdirs)} directions")
    h, w = input_size or record.input_size
    chosen = None
    if trial is not None:
        hit = df[df["trial"] == trial]
        if hit.empty:
            raise InputError(field="trial", value=trial, rule=f"study {study.study_name!r} has no such trial "
                                                              f"(trials 0..{int(df['trial'].max())})")
        row = hit.iloc[0]
    elif not ranked.empty:
        row = ranked.iloc[0]
    else:
        row = None
        warnings.append("no feasible trial yet: no config to break down")
    if row is not None:
        label = f"trial {int(row['trial'])}"
        cfg = config_of(row, label)
        result = count(cfg, h, w, convention=counting)
        chosen = Breakdown(label=label, config=cfg, result=result, trial=int(row["trial"]))
        rec_p = row["params"]
        if rec_p is not pd.NA and rec_p is not None and int(rec_p) != result.params:
            warnings.append(f"{label}: recorded {int(rec_p):,} params but the counter now gives "
                            f"{result.params:,} (the counter changed since the search?)")
        rec_m = row["macs"]
        if ((h, w) == record.input_size and counting == record.counting and rec_m is not pd.NA and rec_m is not None
                and int(rec_m) != result.macs):
            warnings.append(f"{label}: recorded {int(rec_m):,} MACs but the counter now gives "
                            f"{result.macs:,}")
    return StudyReport(name=study.study_name, storage=redact(storage), record=record,
                       directions=directions, trials=df, ranked=ranked, top_n=top,
                       varying=tuple(varying), fixed=fixed, chosen=chosen, warnings=tuple(warnings))


def load_report(storage: str | None = None, name: str | None = None, *, top: int = DEFAULT_TOP,
                trial: int | None = None, input_size: tuple[int, int] | None = None,
                dcn_macs: str | None = None) -> StudyReport:
    """Open the storage (None: the search's default, `featherface-tune.db` in the working directory),
    load the study and build its report (one-line InputErrors on failure)."""
    storage = storage or default_storage_url()
    study = load_study(storage, name)
    return build_report(study, storage, top=top, trial=trial, input_size=input_size, dcn_macs=dcn_macs)


# ---- comparing configs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CompareEntry:
    label: str
    source: str  # "preset" or "file"
    config: FeatherFaceConfig
    result: CountResult


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.lower().endswith((".toml", ".json"))


def resolve_entry(spec: str, input_size: tuple[int, int] = DEFAULT_INPUT, counting: Convention = TRUE) -> CompareEntry:
    """A compare argument: an existing file is a config file, anything else a preset name."""
    from featherface_tune.models.presets import resolve_config

    p = Path(spec)
    if p.is_file():
        cfg, source = resolve_config(None, p), "file"
    elif _looks_like_path(spec):
        raise InputError(field="compare", value=spec, rule="config file does not exist (and it is not a preset name)")
    else:
        cfg, source = resolve_config(spec), "preset"
    return CompareEntry(label=spec, source=source, config=cfg, result=count(cfg, *input_size, convention=counting))


@dataclass(frozen=True)
class Comparison:
    entries: tuple[CompareEntry, ...]
    input_size: tuple[int, int]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    @cached_property
    def modules(self) -> pd.DataFrame:
        """Per-module params and MACs of every config side by side, with deltas to the first."""
        return compare_frame(self.entries)

    @cached_property
    def fields(self) -> pd.DataFrame:
        """Config fields that differ between the configs (one column per config)."""
        rows = []
        dicts = [e.config.to_dict() for e in self.entries]
        for k in FIELD_NAMES:
            vals = [d[k] for d in dicts]
            if any(v != vals[0] for v in vals[1:]):
                row: dict[str, Any] = {"field": k}
                for e, v in zip(self.entries, vals):
                    row[e.label] = _fmt_field(v)
                rows.append(row)
        return pd.DataFrame(rows, columns=["field", *self.labels])

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "compare",
            "input_size": list(self.input_size),
            "baseline": self.entries[0].label,
            "configs": [{"label": e.label, "source": e.source, "config": e.config.to_dict(),
                         **e.result.to_json()} for e in self.entries],
            "modules": frame_records(self.modules),
            "fields": frame_records(self.fields),
        }


def compare_frame(entries: Sequence[CompareEntry]) -> pd.DataFrame:
    base = entries[0]
    two = len(entries) == 2
    rows = []
    names = list(GROUPS) + ["total"]  # every count holds every group

    def cost(e: CompareEntry, g: str) -> tuple[int, int]:
        if g == "total":
            return e.result.params, e.result.macs
        return e.result.modules[g]

    total_dp = entries[-1].result.params - base.result.params if two else 0
    for g in names:
        row: dict[str, Any] = {"module": g}
        bp, bm = cost(base, g)
        for e in entries:
            row[f"{e.label} params"] = cost(e, g)[0]
        for e in entries[1:]:
            row["delta params" if two else f"delta params {e.label}"] = cost(e, g)[0] - bp
        if two:
            dp = cost(entries[1], g)[0] - bp
            row["share of delta params %"] = (100.0 * dp / total_dp if total_dp else 0.0) + 0.0
        for e in entries:
            row[f"{e.label} MACs"] = cost(e, g)[1]
        for e in entries[1:]:
            row["delta MACs" if two else f"delta MACs {e.label}"] = cost(e, g)[1] - bm
        rows.append(row)
    return pd.DataFrame(rows)


def compare(specs: Sequence[str], input_size: tuple[int, int] = DEFAULT_INPUT,
            counting: Convention = TRUE) -> Comparison:
    """Resolve each spec (preset name or config file) and count it at `input_size` in `counting`."""
    if len(specs) < 2:
        raise InputError(field="compare", rule="needs at least two configs (preset names or config files)")
    entries = [resolve_entry(s, input_size, counting) for s in specs]
    seen: Counter[str] = Counter()
    named = []
    for e in entries:
        seen[e.label] += 1
        if seen[e.label] > 1:
            e = CompareEntry(f"{e.label} ({seen[e.label]})", e.source, e.config, e.result)
        named.append(e)
    return Comparison(entries=tuple(named), input_size=input_size)
