"""Forward latency of each preset in onnxruntime and PyTorch, side by side, and the deformable convs' share.

For every (preset, input size) the two runtimes are measured alternately, `--repeats` times each
(run-to-run spread = (max - min) / median over those repeats); each measurement warms up until stable
and times runs until the median's 95 % interval is within --rel-ci (featherface_tune.deploy.latency).
Batch 1, CPU, --threads intra-op threads, random weights (time does not depend on them).
The DCN share: the same config with `ssh_deformable=false` (plain 3x3 convs of the same shape in the
SSH), share = 1 - t(plain) / t(deformable), per runtime.

    python3 benchmarks/latency.py                                  # all presets, 320 and 640
    python3 benchmarks/latency.py --presets featherface-official --sizes 320 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featherface_tune.deploy.latency import RUNTIMES, forward_fn, measure_fn  # noqa: E402
from featherface_tune.models.presets import get_preset, preset_names  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="*", default=preset_names())
    ap.add_argument("--sizes", nargs="*", type=int, default=[320, 640])
    ap.add_argument("--runtimes", nargs="*", default=list(RUNTIMES), choices=RUNTIMES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rel-ci", type=float, default=0.03)
    ap.add_argument("--max-seconds", type=float, default=8.0, help="time cap of one measurement")
    ap.add_argument("--no-dcn-share", action="store_true")
    args = ap.parse_args()

    import torch

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads available, "
          f"--threads {args.threads}, torch {torch.__version__}", end="")
    try:
        import onnxruntime

        print(f", onnxruntime {onnxruntime.__version__}")
    except ImportError:
        print(", onnxruntime not installed")
    print(f"{'preset':28} {'size':>5} {'DCN':>4} " + " ".join(f"{r + ' ms':>16} {'spread':>7} {'ci':>6}" for r in args.runtimes))
    t_start = time.perf_counter()
    # a discarded measurement first: the process's first one runs slow (lazy initialisation, clocks)
    fn, cleanup = forward_fn(get_preset(args.presets[0]), args.sizes[0], args.sizes[0], args.runtimes[0], args.threads)
    measure_fn(fn, args.runtimes[0], args.threads, (args.sizes[0],) * 2, args.rel_ci, args.max_seconds)  # type: ignore[arg-type]
    cleanup()
    for name in args.presets:
        base = get_preset(name)
        variants = [("on" if base.ssh_deformable else "off", base)]
        if base.ssh_deformable and not args.no_dcn_share:
            variants.append(("off", base.replace(ssh_deformable=False)))
        for size in args.sizes:
            medians: dict[tuple[str, str], float] = {}
            for label, cfg in variants:
                fns = {rt: forward_fn(cfg, size, size, rt, args.threads) for rt in args.runtimes}
                runs: dict[str, list] = {rt: [] for rt in args.runtimes}
                try:
                    for _ in range(args.repeats):  # alternate the runtimes: drifts of a shared machine hit both
                        for rt in args.runtimes:
                            runs[rt].append(measure_fn(fns[rt][0], rt, args.threads, (size, size), args.rel_ci,
                                                       args.max_seconds))
                finally:
                    for _fn, cleanup in fns.values():
                        cleanup()
                cells = []
                for rt in args.runtimes:
                    meds = [m.median_ms for m in runs[rt]]
                    med = statistics.median(meds)
                    medians[(label, rt)] = med
                    spread = (max(meds) - min(meds)) / med
                    ci = max(m.rel_ci for m in runs[rt])
                    cells.append(f"{med:16.2f} {spread:6.1%} {ci:5.1%}" + ("" if all(m.converged for m in runs[rt]) else "*"))
                print(f"{name:28} {size:5d} {label:>4} " + " ".join(cells), flush=True)
            if len(variants) == 2:
                shares = " ".join(f"{rt} {1 - medians[('off', rt)] / medians[('on', rt)]:.0%}" for rt in args.runtimes)
                print(f"{'':28} {size:5d} DCN share of the time: {shares}", flush=True)
    print(f"# {time.perf_counter() - t_start:.0f} s; spread = (max - min) / median of {args.repeats} measurements; "
          f"ci = widest half-width of a measurement's 95 % median interval; * = a measurement hit its time cap")


if __name__ == "__main__":
    main()
