"""Microseconds per config: analytic counting vs building the model (+ numel) vs fvcore.

Random valid configs (random neck, BiFPN depth, per-level SSH widths, switches), each counted once:
the first 400 of a process (the counter's per-group memos empty, as when a search starts) and 400 new
configs after those (memos warmed by the first 400, as later in a search); also a config counted again
(the count's own cache) and cold (every cache cleared before each config). Building is timed on the same
configs. Medians of per-config times; the goal is >= 1,000x building for a new config in both cases.

    python benchmarks/count_speed.py [--configs 400] [--build 40] [--fvcore 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from featherface_tune.counter.analytic import clear_caches, count
from featherface_tune.counter.crosscheck import fvcore_by_group
from featherface_tune.models.builder import build_model, count_parameters
from featherface_tune.models.config import FeatherFaceConfig


def random_configs(n: int, seed: int) -> list[FeatherFaceConfig]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        neck = rng.choice(["bifpn", "bifpn", "fpn"])
        nc = rng.randrange(16, 129)
        out.append(FeatherFaceConfig(
            backbone_cbam=rng.random() < 0.7, neck=neck, neck_channels=nc,
            bifpn_repeats=rng.randint(1, 4) if neck == "bifpn" else 0, neck_cbam=rng.random() < 0.7,
            backbone_cbam_reduction=rng.choice([4, 8, 16, 32]), neck_cbam_reduction=rng.choice([4, 8, 16]),
            ssh_channels=tuple(4 * rng.randrange(4, 33) for _ in range(3)),
            ssh_deformable=rng.random() < 0.5, shuffle=rng.choice(["block", "plain", "none"])))
    return out


def per_config_us(fn, cfgs, repeat: int = 1) -> list[float]:
    times = []
    for cfg in cfgs:
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn(cfg)
        times.append((time.perf_counter() - t0) / repeat * 1e6)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=400, help="new configs per phase (first, then after warm-up)")
    ap.add_argument("--build", type=int, default=40, help="configs also built (about 40 ms each)")
    ap.add_argument("--fvcore", type=int, default=5, help="configs also counted by fvcore (about 1 s each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfgs = random_configs(2 * args.configs, args.seed)
    first, later = cfgs[: args.configs], cfgs[args.configs:]

    def cold(cfg):
        clear_caches()
        return count(cfg)

    count(FeatherFaceConfig(), 32, 32)  # import warm-up (another input size: no block of it is reused)
    clear_caches()
    new_first = statistics.median(per_config_us(count, first))  # each config once, caches kept
    new_later = statistics.median(per_config_us(count, later))  # new configs after the first ones
    again = statistics.median(per_config_us(count, later, repeat=50))
    cold_t = statistics.median(per_config_us(cold, later[:100], repeat=5))
    build = statistics.median(per_config_us(lambda c: count_parameters(build_model(c)), later[: args.build]))
    print(f"configs: {len(first)} + {len(later)} random valid FeatherFace configs, input 640x640; "
          f"build: {args.build}; fvcore: {args.fvcore}")
    print(f"analytic, a new config, first {len(first)} of a process: {new_first:9.1f} us (median)")
    print(f"analytic, a new config, after {len(first)} others      : {new_later:9.1f} us (median)")
    print(f"analytic, a config counted again (cached)       : {again:9.1f} us (median)")
    print(f"analytic, cold (every cache cleared per config)  : {cold_t:9.1f} us (median)")
    print(f"build model + sum numel                         : {build:9.1f} us (median)")
    print(f"speed-up vs build, a new config: first {build / new_first:,.0f}x, after warm-up {build / new_later:,.0f}x "
          f"(goal >= 1,000x); counted again {build / again:,.0f}x; cold {build / cold_t:,.0f}x")
    if args.fvcore:
        x = torch.zeros(1, 3, 640, 640)
        fv = statistics.median(per_config_us(lambda c: fvcore_by_group(build_model(c).eval(), x), later[: args.fvcore]))
        print(f"build model + fvcore MACs                       : {fv:9.1f} us (median); "
              f"{fv / new_later:,.0f}x the analytic count of a new config")


if __name__ == "__main__":
    main()
