"""The latency model end to end: table build time, model error and Kendall tau, and the search's
recommendation timed side by side against the `macs` optimum and the `closest` answer.

1. `search --objective latency` from an empty cache (a fresh folder): the per-block table is built
   (time printed), validated on whole configs (median absolute % error, Kendall tau), solved over the
   exact set and its finalists timed in interleaved rounds; then the same search again (the table is
   reused: its time printed).
2. Held-out check: `--heldout` exact configs picked at random away from the table's validation set,
   predicted and timed side by side (`deploy.latency.compare`): error and tau on configs the model
   never saw.
3. The recommended config, the macs optimum and the closest answer timed side by side again
   (`--rounds` rounds of `compare`): medians, 95 % intervals and the ratio to the recommendation.

    python3 benchmarks/latency_model.py                             # onnxruntime, 1 thread, 320x320
    python3 benchmarks/latency_model.py --runtime torch --size 640 --heldout 12
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=int, default=489_000)
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--heldout", type=int, default=10, help="exact configs away from the validation set")
    ap.add_argument("--rounds", type=int, default=2, help="side-by-side repeats of the final comparison")
    ap.add_argument("--cache", default=None, help="cache folder (default: a fresh temporary one)")
    args = ap.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="ff-latency-")
    os.environ["XDG_CACHE_HOME"] = cache

    import numpy as np

    from featherface_tune import search
    from featherface_tune.deploy.latency import compare
    from featherface_tune.rank_correlation import kendall_tau
    from featherface_tune.tuner.solve import prove
    from featherface_tune.tuner.space import default_space

    size = (args.size, args.size)
    print(f"# {args.runtime}, {args.threads} thread(s), {size[0]}x{size[1]}, target {args.target:,}; cache {cache}")
    t0 = time.perf_counter()
    res = search(args.target, objective="latency", latency_runtime=args.runtime, latency_threads=args.threads,
                 input_size=size, note=lambda s: print("  " + s, flush=True))
    first = time.perf_counter() - t0
    table = res.study.trials[0].user_attrs["latency_model"]  # the model's summary, recorded on every trial
    print(f"search 1 (table from nothing): {first:.0f} s; table timing {table['build_seconds']:.0f} s, "
          f"{table['points']} block timings in {table['groups']} groups, overhead {table['overhead_ms']:.2f} ms")
    print(f"validation on {table['configs']} whole configs: median abs error {table['median_abs_pct_error']} %, "
          f"Kendall tau {table['kendall_tau']}")
    t0 = time.perf_counter()
    res2 = search(args.target, objective="latency", latency_runtime=args.runtime, latency_threads=args.threads,
                  input_size=size, note=lambda s: print("  " + s, flush=True) if "table" in s else None)
    print(f"search 2 (table reused): {time.perf_counter() - t0:.0f} s; same recommendation: "
          f"{res2.best[0].config == res.best[0].config}")

    proof = prove(default_space(), args.target, 0, input_size=size)
    ex = proof.exact
    assert ex is not None
    from featherface_tune.deploy.latency_table import LatencyModel, LatencyTable, table_key

    tab = LatencyTable.load(table_key(args.runtime, args.threads, size))
    assert tab is not None
    lm = LatencyModel(tab)
    seen = {str(v["config"]) for v in tab.validation}
    rng = random.Random(7)
    pool = [i for i in range(len(ex)) if str(ex.config(i).to_dict()) not in seen]
    picks = rng.sample(pool, min(args.heldout, len(pool)))
    cfgs = [ex.config(i) for i in picks]
    pred = [lm.predict(c) for c in cfgs]
    lats = compare(cfgs, size[0], size[1], args.runtime, args.threads, max_seconds=120)
    meas = [x.median_ms for x in lats]
    err = np.median([abs(p - m) / m * 100 for p, m in zip(pred, meas)])
    print(f"held-out: {len(cfgs)} exact configs never timed by the table: median abs error {err:.1f} %, "
          f"Kendall tau {kendall_tau(pred, meas):.3f}")
    for p, m in sorted(zip(pred, meas)):
        print(f"  predicted {p:8.2f} ms  measured {m:8.2f} ms")

    fin = res.solved["finalists"]  # type: ignore[index]
    rec = fin[0]
    macs_opt = next(f for f in fin if "macs optimum" in f["why"])
    close = next(f for f in fin if "closest answer" in f["why"])
    from featherface_tune.models.config import from_mapping

    trio = [("recommended", rec), ("macs optimum", macs_opt), ("closest answer", close)]
    print("side by side (finalist rounds of the search):")
    for label, f in trio:
        lo, hi = f["latency_ci_ms"]
        print(f"  {label:15s} {f['latency_ms']:8.2f} ms  [{lo:.2f}, {hi:.2f}]  predicted {f['latency_predicted_ms']:.2f}"
              f"  MACs {f['macs'] / 1e6:.1f} M")
    for r in range(args.rounds):
        again = compare([from_mapping(dict(f["config"])) for _, f in trio], size[0], size[1], args.runtime,
                        args.threads, max_seconds=90)
        base = again[0].median_ms
        print(f"side by side, repeat {r + 1}: " + "; ".join(
            f"{label} {x.median_ms:.2f} ms [{x.ci_ms[0]:.2f}, {x.ci_ms[1]:.2f}] x{x.median_ms / base:.3f}"
            for (label, _), x in zip(trio, again)))


if __name__ == "__main__":
    main()
