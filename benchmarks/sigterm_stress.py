"""SIGTERM during a sampled search, repeated (printed, not asserted): each run is a search on SQLite
with the cheap latency stand-in (tests/cheap_latency.py), sent SIGTERM a random 0-0.3 s after its
second complete trial. A run must exit 143 within `--wait` seconds; one that does not is a hang: it
gets SIGABRT, and Python's fault handler writes every thread's stack to hang-N.txt in the work folder.
`--busy` keeps another core busy (as a second pytest worker does), which made the hangs this found
(a signal inside a storage write, or inside Optuna's heartbeat thread setup) show up.

    python benchmarks/sigterm_stress.py [--runs 25] [--wait 40] [--busy] [--dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHEAP_CLI = str(REPO / "tests" / "cheap_latency.py")


def narrow_space() -> str:
    """The robustness tests' narrow space (tests/robustness/conftest.py), read from there."""
    spec = importlib.util.spec_from_file_location("robustness_conftest", REPO / "tests" / "robustness" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.NARROW_SPACE)


def complete(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
    except sqlite3.Error:
        return 0


def one_run(folder: Path, space: str, wait: float) -> str:
    folder.mkdir(parents=True)
    (folder / "narrow.toml").write_text(space, encoding="utf-8")
    db = folder / "s.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", "FEATHERFACE_TUNE_LATENCY_SECONDS": "2"}
    proc = subprocess.Popen([sys.executable, CHEAP_CLI, "search", "--target", "489000", "--tolerance", "5%",
                             "--space", "narrow.toml", "--objective", "latency", "--latency-mode", "sampled",
                             "--runtime", "torch", "--input-size", "320", "320", "--trials", "10000", "--study", "t",
                             "--storage", f"sqlite:///{db}"], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    started = time.monotonic()
    while complete(db) < 2 and proc.poll() is None and time.monotonic() - started < 120:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=wait)
        return f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        (folder.parent / f"hang-{folder.name}.txt").write_text(err, encoding="utf-8")
        return "hang"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--wait", type=float, default=40.0, help="seconds after SIGTERM before a run counts as hung")
    ap.add_argument("--busy", action="store_true", help="keep another core busy meanwhile")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temporary one)")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="sigterm-stress-"))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        space = narrow_space()
        for i in range(args.runs):
            outcome = one_run(work / f"run{i}", space, args.wait)
            outcomes[outcome] += 1
            print(f"run {i}: {outcome}", flush=True)
    finally:
        if busy is not None:
            busy.kill()
    print(f"{args.runs} runs: " + ", ".join(f"{k} x{v}" for k, v in sorted(outcomes.items()))
          + f"; stacks of hung runs in {work}")


if __name__ == "__main__":
    main()
