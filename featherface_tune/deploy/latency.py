"""Forward latency of a config (batch 1, CPU) in onnxruntime or PyTorch, measured until its median is known.

Procedure (`time_runs`): warm up in windows of `WINDOW` runs until a window's median is within
`WARMUP_STABLE` of the previous window's (caches, allocator and thread pool settled; at most a
quarter of the time cap), then time single runs in blocks until the 95 % confidence interval of the
median (distribution-free, from order statistics) is within +/- `rel_ci` of the median, or the time
cap is reached (then `converged` is False and the interval actually reached is reported). The spread
reported is the interquartile range.

torch.utils.benchmark's `adaptive_autorange` stops on IQR/median, which says how noisy single runs
are, not how well the median is known, and it times only Python statements in-process in the same
way as this loop; so the loop is written here once for both runtimes, and PyTorch's thread count is
set the same way `Timer(num_threads=...)` does (torch.set_num_threads).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from featherface_tune.deploy import onnxruntime_available
from featherface_tune.errors import InputError
from featherface_tune.extras import require
from featherface_tune.models.config import FeatherFaceConfig

RUNTIMES = ("onnxruntime", "torch")
WINDOW = 5
WARMUP_STABLE = 0.05
MIN_RUNS = 10
Z95 = 1.959964


def default_runtime() -> str:
    """onnxruntime when the deploy extra is installed (the runtime people deploy with), else torch."""
    return "onnxruntime" if onnxruntime_available() else "torch"


def check_runtime(name: str | None, field: str = "runtime") -> str:
    """`name` (an error about it names the argument `field`), or the default runtime for None."""
    if name is None:
        return default_runtime()
    if name not in RUNTIMES:
        raise InputError(field=field, value=name, rule=f"use {' or '.join(RUNTIMES)}")
    if name == "onnxruntime":
        require("onnxruntime", "the onnxruntime runtime")
        require("onnxscript", "the onnxruntime runtime")
    return name


@dataclass(frozen=True)
class Latency:
    runtime: str
    threads: int
    input_size: tuple[int, int]
    median_ms: float
    ci_ms: tuple[float, float]  # 95 % confidence interval of the median
    iqr_ms: float
    runs: int
    warmup_runs: int
    converged: bool
    seconds: float

    @property
    def rel_ci(self) -> float:
        """Half-width of the median's 95 % interval relative to the median."""
        return (self.ci_ms[1] - self.ci_ms[0]) / 2 / self.median_ms if self.median_ms > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "threads": self.threads, "input_size": list(self.input_size),
                "median_ms": round(self.median_ms, 4), "ci_ms": [round(v, 4) for v in self.ci_ms],
                "rel_ci": round(self.rel_ci, 4), "iqr_ms": round(self.iqr_ms, 4), "runs": self.runs,
                "warmup_runs": self.warmup_runs, "converged": self.converged, "seconds": round(self.seconds, 2)}


def median_ci(times: np.ndarray | list[float], z: float = Z95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: the order statistics at ranks
    n/2 -/+ z*sqrt(n)/2 (normal approximation of the binomial)."""
    s = np.sort(np.asarray(times, dtype=np.float64))
    n = len(s)
    if n == 0:
        return (math.nan, math.nan)
    lo = max(0, int(math.floor(n / 2 - z * math.sqrt(n) / 2)))
    hi = min(n - 1, int(math.ceil(n / 2 + z * math.sqrt(n) / 2)) - 1)
    return float(s[lo]), float(s[max(lo, hi)])


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def time_runs(fn: Callable[[], Any], rel_ci: float = 0.03, max_seconds: float = 30.0,
              min_runs: int = MIN_RUNS) -> tuple[list[float], int, bool]:
    """(times in ms, warm-up runs, converged) for `fn` per the module's procedure."""
    start = time.perf_counter()
    warm, prev = 0, None
    while True:  # warm-up until two consecutive windows agree
        window = [_timed(fn) for _ in range(WINDOW)]
        warm += WINDOW
        med = float(np.median(window))
        if prev is not None and abs(med - prev) <= WARMUP_STABLE * prev:
            break
        prev = med
        if time.perf_counter() - start > max_seconds / 4:
            break
    times: list[float] = []
    while True:
        times.extend(_timed(fn) for _ in range(WINDOW))
        if len(times) >= min_runs:
            lo, hi = median_ci(times)
            if (hi - lo) / 2 <= rel_ci * float(np.median(times)):
                return times, warm, True
        if time.perf_counter() - start > max_seconds:
            return times, warm, False


def forward_fn(cfg: FeatherFaceConfig, h: int, w: int, runtime: str, threads: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(one forward pass of a fresh model of `cfg` on a 1x3xHxW input, cleanup)."""
    import torch

    from featherface_tune.models.builder import build_model

    model = build_model(cfg).eval()
    x = torch.randn(1, 3, h, w) * 60
    if runtime == "torch":
        old = torch.get_num_threads()
        torch.set_num_threads(threads)

        def run_torch() -> Any:
            with torch.inference_mode():
                return model(x)

        return run_torch, lambda: torch.set_num_threads(old)
    from featherface_tune.deploy.export import trace
    from featherface_tune.deploy.runtime import open_session

    proto = trace(model, dynamic=False, example=x)  # static shape: what a deployment at this size runs
    sess = open_session(proto.SerializeToString(), threads, what=f"the exported {h}x{w} model")
    feeds = {sess.get_inputs()[0].name: x.numpy()}
    return (lambda: sess.run(None, feeds)), (lambda: None)


def measure(cfg: FeatherFaceConfig, h: int, w: int, runtime: str | None = None, threads: int = 1,
            rel_ci: float = 0.03, max_seconds: float = 30.0) -> Latency:
    """Latency of one forward pass of `cfg` (batch 1, random weights: the time does not depend on
    them) at h x w, `threads` threads, in `runtime` (default: onnxruntime when installed)."""
    runtime = check_runtime(runtime)
    if threads < 1:
        raise InputError(field="threads", value=threads, rule="must be at least 1")
    fn, cleanup = forward_fn(cfg, h, w, runtime, threads)
    try:
        return measure_fn(fn, runtime, threads, (h, w), rel_ci, max_seconds)
    finally:
        cleanup()


def measure_fn(fn: Callable[[], Any], runtime: str, threads: int, input_size: tuple[int, int],
               rel_ci: float = 0.03, max_seconds: float = 30.0) -> Latency:
    """`time_runs` of a prepared forward pass (`forward_fn`), summarised."""
    t0 = time.perf_counter()
    times, warm, ok = time_runs(fn, rel_ci, max_seconds)
    arr = np.asarray(times)
    q1, q3 = np.percentile(arr, [25, 75])
    return Latency(runtime, threads, tuple(input_size), float(np.median(arr)), median_ci(arr),  # type: ignore[arg-type]
                   float(q3 - q1), len(arr), warm, ok, time.perf_counter() - t0)


MIN_ROUNDS = 5


def compare(cfgs: list[FeatherFaceConfig], h: int, w: int, runtime: str | None = None, threads: int = 1,
            rel_ci: float = 0.03, max_seconds: float = 60.0, runs_per_round: int = 3,
            progress: Callable[[int, int], None] | None = None) -> list[Latency]:
    """Latencies of several configs timed side by side: one process, every model prepared first,
    then rounds in which each config (in a fresh random order) runs `runs_per_round` times, until
    every median's 95 % interval is within +/- `rel_ci` (after at least `MIN_ROUNDS` rounds) or
    `max_seconds` pass. A load that comes and goes hits every config alike, so their medians
    compare where timings minutes apart would not."""
    runtime = check_runtime(runtime)
    if threads < 1:
        raise InputError(field="threads", value=threads, rule="must be at least 1")
    prepared = [forward_fn(c, h, w, runtime, threads) for c in cfgs]
    t0 = time.perf_counter()
    try:
        warm = []
        for fn, _ in prepared:  # warm-up: each config to a stable window (time_runs' rule), briefly
            _, n, _ = time_runs(fn, 1.0, max_seconds=min(5.0, max_seconds / 10 / max(1, len(cfgs))), min_runs=1)
            warm.append(n)
        times: list[list[float]] = [[] for _ in cfgs]
        rng = np.random.default_rng(0)
        rounds = 0
        while True:
            for i in rng.permutation(len(cfgs)):
                times[i].extend(_timed(prepared[i][0]) for _ in range(runs_per_round))
            rounds += 1
            if progress is not None:
                progress(rounds, MIN_ROUNDS)
            if rounds >= MIN_ROUNDS and all(_rel_half(t) <= rel_ci for t in times):
                break
            if time.perf_counter() - t0 > max_seconds:
                break
    finally:
        for _, cleanup in reversed(prepared):
            cleanup()
    seconds = time.perf_counter() - t0
    out = []
    for t, n in zip(times, warm):
        arr = np.asarray(t)
        q1, q3 = np.percentile(arr, [25, 75])
        out.append(Latency(runtime, threads, (h, w), float(np.median(arr)), median_ci(arr), float(q3 - q1),
                           len(arr), n, _rel_half(t) <= rel_ci, seconds))
    return out


def _rel_half(times: list[float]) -> float:
    lo, hi = median_ci(times)
    med = float(np.median(times))
    return (hi - lo) / 2 / med if med > 0 else math.inf


def indistinguishable(lats: list[Latency]) -> list[bool]:
    """Per latency, whether its median's 95 % interval overlaps the fastest one's (the two cannot
    be told apart at this confidence)."""
    if not lats:
        return []
    best = min(lats, key=lambda x: x.median_ms)
    return [x.ci_ms[0] <= best.ci_ms[1] and best.ci_ms[0] <= x.ci_ms[1] for x in lats]
