"""A cheap, deterministic stand-in for latency measurement, for tests that need *a* sampled (measured)
objective - trials, storage, resuming, heartbeats, signals - and not the measurement itself.

A real measurement builds the model and times forward passes until the median is known (onnxruntime
also exports the model first): seconds per trial, and noisy. The stand-in keeps everything around
the measurement real (the runtime check, the objective, the records) and replaces only the timing:
the "latency" grows with the config's MACs, and each call sleeps `SLEEP_S` so that a trial stays in
flight long enough for a test to signal or kill the worker inside it. The measurement itself is
tested on the real thing in tests/deploy/test_latency.py.

In-process: the `cheap_latency` fixture (tests/conftest.py). In a subprocess: run this file instead
of `-m featherface_tune.cli`, e.g. `[sys.executable, CHEAP_CLI, "search", ...]`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

CHEAP_CLI = str(Path(__file__).resolve())
SLEEP_S = 0.1


def fake_measure(cfg: Any, h: int, w: int, runtime: str | None = None, threads: int = 1, rel_ci: float = 0.03,
                 max_seconds: float = 30.0) -> Any:
    """A `Latency` like `featherface_tune.deploy.latency.measure` returns: 1 ms per 100 M MACs, plus up
    to 0.6 ms by the SSH widths (so that it does not rank configs exactly as MACs do, and a MACs x
    latency front has several members), a 1 % interval, converged."""
    from featherface_tune.counter.analytic import count
    from featherface_tune.deploy.latency import Latency, check_runtime
    from featherface_tune.errors import InputError

    runtime = check_runtime(runtime)
    if threads < 1:
        raise InputError(f"threads={threads}: must be at least 1")
    time.sleep(SLEEP_S)
    ms = 0.5 + count(cfg, h, w).macs / 1e8 + 0.05 * (sum(cfg.ssh_widths) // 4 % 13)
    return Latency(runtime, threads, (h, w), ms, (ms * 0.99, ms * 1.01), ms * 0.02, 10, 5, True, SLEEP_S)


def install() -> None:
    """Replace the measurement for this process (the search looks it up at each call)."""
    import featherface_tune.deploy.latency as latency

    latency.measure = fake_measure  # type: ignore[assignment]


if __name__ == "__main__":  # the CLI, with the stand-in
    install()
    from featherface_tune.cli import app

    app(sys.argv[1:], prog_name="featherface-tune")
