"""A latency model of FeatherFace configs: per-block latency tables, summed, plus a fitted overhead.

A config's forward time is close to the sum of its blocks' (backbone, CBAMs, BiFPN or FPN, SSH per
level with or without DCN, shuffle, heads), each at the level size the input gives. The architecture
description (`featherface_tune.models.arch`) lists every block instance of a config with its
constructor arguments and its price (MACs), so the model needs no block-specific code:

* **groups**: instances of one block type at one level with the same settings (the non-integer
  arguments: DCN on/off, the shuffle kind, the backbone width, ...). Within a group only widths
  vary, and time is fitted as `a + b * MACs` (Theil-Sen, b >= 0) through the points measured.
* **points**: for each group the space gives, up to `POINTS_PER_GROUP` instances spread over its
  MACs are timed in isolation (each timing kept as its 20th percentile, `low_time`) (inputs captured from a forward pass of a model that has them) in the
  chosen runtime: eager torch, or onnxruntime on a small ONNX graph of the block alone (a whole-model
  export per config takes seconds; a block's is small).
* **overhead**: a handful of whole configs is timed (`latency.measure`); the median of measured
  minus the sum of blocks is the overhead. It absorbs what additivity misses: the residual adds and
  ReLUs around CBAMs, the output concatenation, and in onnxruntime the graph fusions across block
  boundaries. The same configs give the model's validation (median absolute % error, Kendall tau).

Tables live in the user's cache (`$XDG_CACHE_HOME/featherface-tune/latency`, else
`~/.cache/featherface-tune/latency`), one JSON file per key: runtime and its version, torch version,
threads, CPU model, input size. A table grows when a config needs a group it lacks (first use).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from featherface_tune.errors import InputError
from featherface_tune.models.arch import Block, Instance, layout, sizes
from featherface_tune.models.config import FeatherFaceConfig

TABLE_VERSION = 2  # 2: timings keep their 20th percentile (1: medians)
POINTS_PER_GROUP = 4
BLOCK_SECONDS = 1.0  # time cap of one block's timing
VALIDATION_CONFIGS = 5
LOW_QUANTILE = 20  # percent: the quantile of a timing a table keeps (`low_time`)
CACHE_ENV = "XDG_CACHE_HOME"

Group = tuple[str, int, str]  # (block name, level or -1, settings)


def cache_dir() -> Path:
    """Where latency tables are kept: $XDG_CACHE_HOME/featherface-tune/latency (default ~/.cache)."""
    base = os.environ.get(CACHE_ENV, "").strip()
    root = Path(base) if base else Path.home() / ".cache"
    return root / "featherface-tune" / "latency"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what platform reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def runtime_version(runtime: str) -> str:
    import torch

    if runtime == "torch":
        return str(torch.__version__)
    import onnxruntime

    return f"{onnxruntime.__version__} (torch {torch.__version__})"


@dataclass(frozen=True)
class TableKey:
    """Everything a block's time depends on besides the block itself."""

    runtime: str
    runtime_version: str
    threads: int
    cpu: str
    input_size: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "runtime_version": self.runtime_version, "threads": self.threads,
                "cpu": self.cpu, "input_size": list(self.input_size), "table_version": TABLE_VERSION}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def path(self) -> Path:
        h, w = self.input_size
        return cache_dir() / f"{self.runtime}-{self.threads}t-{h}x{w}-{self.digest}.json"


def table_key(runtime: str, threads: int, input_size: tuple[int, int]) -> TableKey:
    return TableKey(runtime, runtime_version(runtime), int(threads), cpu_model(),
                    (int(input_size[0]), int(input_size[1])))


# ---- block instances, their groups and MACs ----------------------------------------------------

def _settings(args: tuple[Any, ...]) -> str:
    """The non-width arguments of an instance (bools, strings, floats, tuples), as a key."""
    return json.dumps([a if isinstance(a, (bool, str, float)) else list(a) if isinstance(a, tuple) else None
                       for a in args])


def instances(cfg: FeatherFaceConfig, h: int, w: int) -> list[tuple[Group, Block, Instance, int]]:
    """(group, block, instance, MACs) of every block instance of `cfg` at an h x w input."""
    at = sizes(h, w)
    out = []
    for b, insts in layout(cfg):
        for inst in insts:
            where = at if inst.level is None else at.hws[inst.level]
            macs = int(b.price(*inst.args, where).cost.macs)
            out.append(((b.name, -1 if inst.level is None else inst.level, _settings(inst.args)), b, inst, macs))
    return out


# ---- the table ------------------------------------------------------------------------------------

@dataclass
class LatencyTable:
    """Measured block points, the whole-config validation and the overhead fitted from it."""

    key: TableKey
    points: list[dict[str, Any]] = field(default_factory=list)  # {"group": [...], "args": ..., "macs", "ms"}
    validation: list[dict[str, Any]] = field(default_factory=list)  # {"config", "blocks_ms", "measured_ms"}
    overhead_ms: float = 0.0
    seconds: float = 0.0  # time spent measuring, all builds together

    def __post_init__(self) -> None:
        self._fits: dict[Group, tuple[float, float]] = {}
        self._refit()

    # -- fitting and prediction
    def _refit(self) -> None:
        by: dict[Group, list[tuple[int, float]]] = {}
        for p in self.points:
            by.setdefault(tuple(p["group"]), []).append((int(p["macs"]), float(p["ms"])))  # type: ignore[arg-type]
        self._fits = {g: _fit(pts) for g, pts in by.items()}
        self.overhead_ms = (float(np.median([v["measured_ms"] - v["blocks_ms"] for v in self.validation]))
                            if self.validation else 0.0)

    def groups(self) -> set[Group]:
        return set(self._fits)

    def missing(self, cfgs: Iterable[FeatherFaceConfig]) -> set[Group]:
        h, w = self.key.input_size
        return {g for c in cfgs for g, *_ in instances(c, h, w) if g not in self._fits}

    def blocks_ms(self, cfg: FeatherFaceConfig) -> float:
        h, w = self.key.input_size
        total = 0.0
        for g, _, _, macs in instances(cfg, h, w):
            if g not in self._fits:
                raise KeyError(f"the latency table has no timings of block {g[0]} ({g[2]}) at level {g[1]}")
            a, b = self._fits[g]
            total += a + b * macs
        return total

    def predict(self, cfg: FeatherFaceConfig) -> float:
        """Predicted forward time (ms): the sum of the config's blocks plus the fitted overhead."""
        return self.blocks_ms(cfg) + self.overhead_ms

    # -- validation figures
    def validation_stats(self) -> dict[str, Any]:
        if not self.validation:
            return {"configs": 0, "median_abs_pct_error": None, "kendall_tau": None}
        pred = [v["blocks_ms"] + self.overhead_ms for v in self.validation]
        meas = [v["measured_ms"] for v in self.validation]
        err = [abs(p - m) / m * 100 for p, m in zip(pred, meas)]
        from featherface_tune.rank_correlation import kendall_tau

        tau = kendall_tau(pred, meas)
        return {"configs": len(meas), "median_abs_pct_error": round(float(np.median(err)), 2),
                "kendall_tau": None if math.isnan(tau) else round(tau, 3)}

    def summary(self) -> dict[str, Any]:
        return {"key": self.key.digest, "path": str(self.key.path()), **self.key.to_json(),
                "groups": len(self._fits), "points": len(self.points), "overhead_ms": round(self.overhead_ms, 4),
                "build_seconds": round(self.seconds, 2), **self.validation_stats()}

    # -- storage
    def to_json(self) -> dict[str, Any]:
        return {"key": self.key.to_json(), "points": self.points, "validation": self.validation,
                "seconds": self.seconds}

    def save(self) -> Path:
        from featherface_tune.atomic import atomic_write_text

        path = self.key.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, key: TableKey) -> "LatencyTable | None":
        """The cached table of `key`, None when there is none (or it is unreadable: rebuilt)."""
        try:
            data = json.loads(key.path().read_text(encoding="utf-8"))
            if data["key"] != key.to_json():
                return None
            return cls(key, list(data["points"]), list(data["validation"]), 0.0, float(data.get("seconds", 0.0)))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _fit(pts: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(a, b) of ms = a + b * MACs through the points, robustly (Theil-Sen: b the median of the
    pairwise slopes, at least 0; a the median of ms - b * MACs), so one timing a burst of load hit
    does not tilt the line; the median when the points do not vary in MACs."""
    x = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    i, j = np.triu_indices(len(x), 1)
    apart = x[i] != x[j]
    b = max(0.0, float(np.median((y[j] - y[i])[apart] / (x[j] - x[i])[apart]))) if apart.any() else 0.0
    return float(np.median(y - b * x)), b


# ---- building -----------------------------------------------------------------------------------

Progress = Callable[[str, int, int], None]  # (what, done, total)


def plan_points(table: LatencyTable, cfgs: Sequence[FeatherFaceConfig],
                per_group: int = POINTS_PER_GROUP) -> list[tuple[Group, FeatherFaceConfig, str, int]]:
    """The block instances to time: per group the configs need and the table lacks, up to
    `per_group` instances of distinct MACs spread from the fewest to the most (group, config that
    has it, its attribute key, MACs)."""
    h, w = table.key.input_size
    have = table.groups()
    seen: dict[Group, dict[int, tuple[FeatherFaceConfig, str]]] = {}
    for c in cfgs:
        for g, _, inst, macs in instances(c, h, w):
            if g not in have:
                seen.setdefault(g, {}).setdefault(macs, (c, inst.key))
    out = []
    for g, by_macs in seen.items():
        ms = sorted(by_macs)
        idx = sorted(set(np.linspace(0, len(ms) - 1, min(per_group, len(ms))).round().astype(int).tolist()))
        out += [(g, by_macs[ms[i]][0], by_macs[ms[i]][1], ms[i]) for i in idx]
    return out


def estimate_seconds(n_points: int, n_validation: int, runtime: str, block_seconds: float = BLOCK_SECONDS,
                     config_seconds: float = 5.0) -> float:
    """A rough estimate of a build on an idle machine: each point's timing (warm-up up to a quarter
    of its cap, then the cap at most) plus about 2 s to export it for onnxruntime, and each
    validation config's (plus about 5 s of export). Measured: 111 points and 5 configs at 320x320
    in onnxruntime took 430 s on the shared 2-core machine (this estimate: 416 s)."""
    export = 2.0 if runtime == "onnxruntime" else 0.0
    return n_points * (1.25 * block_seconds + export) + n_validation * (1.25 * config_seconds + 2.5 * export)


def _captured_inputs(cfg: FeatherFaceConfig, keys: Sequence[str], h: int, w: int) -> tuple[Any, dict[str, Any]]:
    """(the model of `cfg`, {attribute key: (module, its input args)}) from one forward pass."""
    import torch

    from featherface_tune.models.builder import build_model

    model = build_model(cfg).eval()
    found: dict[str, Any] = {}

    def keep(k: str) -> Callable[..., None]:
        def hook(m: Any, args: tuple[Any, ...]) -> None:  # returns None: the forward pass is unchanged
            found.setdefault(k, (m, tuple([t.detach() for t in a] if isinstance(a, list) else a.detach()
                                          for a in args)))
        return hook

    hooks = [model.get_submodule(k).register_forward_pre_hook(keep(k)) for k in keys]
    try:
        with torch.inference_mode():
            model(torch.randn(1, 3, h, w) * 60)
    finally:
        for hk in hooks:
            hk.remove()
    return model, found


def block_runner(module: Any, args: tuple[Any, ...], runtime: str, threads: int) -> Callable[[], Any]:
    """One call of a block module on its captured inputs, in `runtime` (onnxruntime: a small ONNX
    graph of the block alone, static shapes)."""
    import torch

    if runtime == "torch":
        def run() -> Any:
            with torch.inference_mode():
                return module(*args)
        return run
    from featherface_tune.deploy.runtime import open_session

    flat = [t for a in args for t in (a if isinstance(a, list) else [a])]
    shapes = [len(a) if isinstance(a, list) else None for a in args]

    class Flat(torch.nn.Module):  # tensors in, tensors out: what the exporter takes
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *xs: Any) -> Any:
            it = iter(xs)
            rebuilt = [[next(it) for _ in range(n)] if n is not None else next(it) for n in shapes]
            out = self.inner(*rebuilt)
            return tuple(out) if isinstance(out, (list, tuple)) else out

    proto = _export(Flat().eval(), tuple(flat))
    sess = open_session(proto.SerializeToString(), threads, what="a block's ONNX graph")
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), flat)}
    return lambda: sess.run(None, feeds)


def _export(module: Any, inputs: tuple[Any, ...]) -> Any:
    import logging
    import warnings

    import torch

    from featherface_tune.deploy.export import MIN_OPSET, _deform_translation

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(module, inputs, dynamo=True, opset_version=MIN_OPSET, verbose=False,
                                     custom_translation_table=_deform_translation(), optimize=True)
    finally:
        quiet.setLevel(level)
    return prog.model_proto  # type: ignore[union-attr]


def low_time(times: Sequence[float]) -> float:
    """What a table keeps of a timing: its `LOW_QUANTILE` quantile. On a shared machine load only
    ever adds time, so the least-disturbed runs say most about the block; blocks timed minutes apart
    then add up to what a whole config's least-disturbed runs take."""
    return float(np.percentile(np.asarray(times, dtype=float), LOW_QUANTILE))


def extend(table: LatencyTable, cfgs: Sequence[FeatherFaceConfig], *, validate: Sequence[FeatherFaceConfig] = (),
           block_seconds: float = BLOCK_SECONDS, config_seconds: float = 5.0, rel_ci: float = 0.03,
           progress: Progress | None = None) -> LatencyTable:
    """Time the block points `cfgs` need that the table lacks, and the whole `validate` configs
    (refits the overhead); returns the table (changed in place)."""
    import torch

    from featherface_tune.deploy.latency import forward_fn, time_runs

    runtime, threads = table.key.runtime, table.key.threads
    h, w = table.key.input_size
    plan = plan_points(table, cfgs)
    total = len(plan) + len(validate)
    t0 = time.perf_counter()
    say = progress or (lambda what, done, n: None)
    by_cfg: dict[FeatherFaceConfig, list[tuple[Group, str, int]]] = {}
    for g, c, k, macs in plan:
        by_cfg.setdefault(c, []).append((g, k, macs))
    done = 0
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for c, items in by_cfg.items():
            _, found = _captured_inputs(c, [k for _, k, _ in items], h, w)
            for g, k, macs in items:
                module, args = found[k]
                fn = block_runner(module, args, runtime, threads)
                times, _, _ = time_runs(fn, rel_ci, block_seconds, min_runs=5)
                table.points.append({"group": list(g), "key": k, "macs": macs, "ms": low_time(times)})
                done += 1
                say(f"block {g[0]}", done, total)
    finally:
        torch.set_num_threads(old)
    table._refit()
    for c in validate:
        fn, cleanup = forward_fn(c, h, w, runtime, threads)
        try:
            times, _, _ = time_runs(fn, rel_ci, config_seconds)
        finally:
            cleanup()
        table.validation.append({"config": c.to_dict(), "blocks_ms": table.blocks_ms(c),
                                 "measured_ms": low_time(times)})
        done += 1
        say("whole config", done, total)
    table._refit()
    table.seconds += time.perf_counter() - t0
    return table


def validation_picks(cfgs: Sequence[FeatherFaceConfig], table: LatencyTable, n: int) -> list[FeatherFaceConfig]:
    """`n` configs spread over the predicted block time (fewest to most), for the validation."""
    if n <= 0 or not cfgs:
        return []
    ranked = sorted(set(cfgs), key=lambda c: (table.blocks_ms(c), json.dumps(c.to_dict(), sort_keys=True)))
    idx = sorted(set(np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int).tolist()))
    return [ranked[i] for i in idx]


def get_table(cfgs: Sequence[FeatherFaceConfig], runtime: str, threads: int, input_size: tuple[int, int], *,
              validate: int = VALIDATION_CONFIGS, block_seconds: float = BLOCK_SECONDS,
              config_seconds: float = 5.0, progress: Progress | None = None,
              note: Callable[[str], None] | None = None, rebuild: bool = False) -> LatencyTable:
    """The cached table of (runtime, threads, input size, this machine), extended to cover `cfgs`
    (and validated on `validate` of them when it has no validation yet), saved back when it grew."""
    from featherface_tune.deploy.latency import check_runtime

    runtime = check_runtime(runtime)
    if threads < 1:
        raise InputError(f"threads {threads}: must be at least 1")
    key = table_key(runtime, threads, input_size)
    table = None if rebuild else LatencyTable.load(key)
    say = note or (lambda text: None)
    if table is None:
        table = LatencyTable(key)
    plan = plan_points(table, cfgs)
    n_val = validate if not table.validation else 0
    if not plan and not n_val:
        say(f"latency table: reused {key.path()} ({len(table.points)} block timings)")
        return table
    est = estimate_seconds(len(plan), n_val, runtime, block_seconds, config_seconds)
    say(f"latency table: timing {len(plan)} blocks and {n_val} whole configs ({runtime}, {threads} thread(s), "
        f"{input_size[0]}x{input_size[1]}); about {est:,.0f} s")
    extend(table, cfgs, block_seconds=block_seconds, config_seconds=config_seconds, progress=progress)
    if n_val:
        extend(table, [], validate=validation_picks(cfgs, table, n_val), block_seconds=block_seconds,
               config_seconds=config_seconds, progress=progress)
    path = table.save()
    stats = table.validation_stats()
    say(f"latency table: {path} ({len(table.points)} block timings, {table.seconds:.1f} s); model vs "
        f"{stats['configs']} whole configs: median abs error {stats['median_abs_pct_error']} %, "
        f"Kendall tau {stats['kendall_tau']}")
    return table


@dataclass
class LatencyModel:
    """A table bound to its input size: what the search and the `latency` command ask."""

    table: LatencyTable

    def predict(self, cfg: FeatherFaceConfig) -> float:
        return self.table.predict(cfg)

    def predict_exact(self, exact: Any) -> np.ndarray:
        """Predicted ms of every config of an `ExactSet`."""
        return np.array([self.table.predict(exact.config(i)) for i in range(len(exact))], dtype="float64")

    def summary(self) -> dict[str, Any]:
        return self.table.summary()


# ---- one config: predicted and measured ------------------------------------------------------------

@dataclass(frozen=True)
class LatencyEstimate:
    """A config's predicted latency (the table) and, when measured, its whole-model timing."""

    config: FeatherFaceConfig
    runtime: str
    threads: int
    input_size: tuple[int, int]
    predicted_ms: float
    measured: Any  # a `deploy.latency.Latency`, or None
    table: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runtime": self.runtime, "threads": self.threads, "input_size": list(self.input_size),
                               "predicted_ms": round(self.predicted_ms, 4), "measured_ms": None,
                               "measured_ci_ms": None}
        if self.measured is not None:
            out.update(measured_ms=round(self.measured.median_ms, 4),
                       measured_ci_ms=[round(v, 4) for v in self.measured.ci_ms],
                       error_pct=round((self.predicted_ms - self.measured.median_ms) / self.measured.median_ms * 100, 2),
                       measurement=self.measured.to_json())
        out["table"] = self.table
        out["config"] = self.config.to_dict()
        return out


def table_configs(extra: Sequence[FeatherFaceConfig] = ()) -> list[FeatherFaceConfig]:
    """`extra` and the named presets: configs of every kind a table is validated on by default."""
    from featherface_tune.models.presets import presets

    return list(dict.fromkeys([*extra, *presets().values()]))


def latency(cfg: FeatherFaceConfig, *, runtime: str | None = None, threads: int = 1,
            input_size: tuple[int, int] = (640, 640), measure: bool = True, rel_ci: float = 0.03,
            max_seconds: float = 30.0, validate: int = VALIDATION_CONFIGS, block_seconds: float = BLOCK_SECONDS,
            note: Callable[[str], None] | None = None, progress: Progress | None = None) -> LatencyEstimate:
    """Predicted forward time of `cfg` from the cached latency table (built on first use, validated
    on the presets) and, with `measure`, its whole-model timing (`deploy.latency.measure`)."""
    from featherface_tune.deploy.latency import check_runtime
    from featherface_tune.deploy.latency import measure as measure_config

    runtime = check_runtime(runtime)
    table = get_table(table_configs([cfg]), runtime, threads, input_size, validate=validate,
                      block_seconds=block_seconds, note=note, progress=progress)
    measured = measure_config(cfg, input_size[0], input_size[1], runtime, threads, rel_ci, max_seconds) if measure else None
    return LatencyEstimate(cfg, runtime, threads, (int(input_size[0]), int(input_size[1])), table.predict(cfg),
                           measured, table.summary())
