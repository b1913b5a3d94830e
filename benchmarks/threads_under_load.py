"""CPU threads under load: seconds per training step with 1 thread, 2 threads, every usable core and
the default (featherface_tune.training.device.default_threads), in alternating blocks so that load
from other processes hits each alike.

    python benchmarks/threads_under_load.py [--preset featherface-official] [--size 320] [--batch-size 4]
                                            [--steps 3] [--rounds 4] [--busy N]

`--busy N` starts N busy-looping processes for the duration (a reproducible "loaded machine"); the
load average before the run is printed beside the figures. A step is forward + a plain loss +
backward on random tensors (no data pipeline), the compute a training step spends its time in.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch

from featherface_tune.models.builder import build_model
from featherface_tune.models.presets import get_preset
from featherface_tune.training.device import default_threads, usable_cores


def _spin() -> None:
    while True:
        pass


def _step(model: torch.nn.Module, x: torch.Tensor) -> None:
    out = model(x)
    loss = sum(o.float().pow(2).mean() for o in out)
    loss.backward()  # type: ignore[union-attr]
    model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="featherface-official")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--busy", type=int, default=0)
    args = ap.parse_args()
    busy = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        torch.manual_seed(0)
        model = build_model(get_preset(args.preset)).train()
        x = torch.randn(args.batch_size, 3, args.size, args.size)
        cores = usable_cores()
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        choices = {"1 thread": 1, "2 threads": 2, f"all {cores} cores": cores, "default": default_threads(environ=env)}
        load = os.getloadavg()[0]
        times: dict[str, list[float]] = {k: [] for k in choices}
        for n in choices.values():  # warm-up
            torch.set_num_threads(n)
            _step(model, x)
        for _ in range(args.rounds):
            for name, n in choices.items():
                torch.set_num_threads(n)
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    _step(model, x)
                    times[name].append(time.perf_counter() - t0)
        print(f"{args.preset}, batch {args.batch_size} at {args.size}x{args.size}, {cores} usable cores, "
              f"{args.busy} busy processes, load average {load:.1f} before the run")
        best = min(statistics.median(v) for v in times.values())
        for name, n in choices.items():
            med = statistics.median(times[name])
            print(f"  {name:<14} ({n:>2} threads): median {med:6.3f} s/step  ({med / best:4.1f}x the fastest)")
    finally:
        for p in busy:
            p.terminate()


if __name__ == "__main__":
    main()
