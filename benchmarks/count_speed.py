"""Microseconds per config: analytic counting vs building the model (+ numel) vs fvcore.

Same random valid configs for every method, one run, medians printed. Analytic counting is timed
cold (block caches cleared before every config) and warm (caches kept, as in a search, where most
blocks repeat between trials).

    python benchmarks/count_speed.py [--configs 200] [--fvcore 10] [--seed 0]
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
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--fvcore", type=int, default=10, help="configs also timed with fvcore (slow)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfgs = random_configs(args.configs, args.seed)

    def cold(cfg):
        clear_caches()
        return count(cfg)

    count(cfgs[0])  # import warm-up
    clear_caches()
    fresh = statistics.median(per_config_us(count, cfgs))  # each config counted once, caches kept
    warm = statistics.median(per_config_us(count, cfgs, repeat=50))
    cold_t = statistics.median(per_config_us(cold, cfgs, repeat=5))
    build = statistics.median(per_config_us(lambda c: count_parameters(build_model(c)), cfgs))
    x = torch.zeros(1, 3, 640, 640)
    fv = statistics.median(per_config_us(lambda c: fvcore_by_group(build_model(c).eval(), x), cfgs[: args.fvcore]))
    print(f"configs: {len(cfgs)} random valid FeatherFace configs (fvcore: first {args.fvcore}), input 640x640")
    print(f"analytic, each config once  : {fresh:12.1f} us/config (median; block caches kept across configs)")
    print(f"analytic, warm block caches : {warm:12.1f} us/config (median)")
    print(f"analytic, cold (caches cleared per config): {cold_t:12.1f} us/config (median)")
    print(f"build model + sum numel     : {build:12.1f} us/config (median)")
    print(f"build model + fvcore MACs   : {fv:12.1f} us/config (median)")
    print(f"speed-up vs build: warm {build / warm:,.0f}x, once {build / fresh:,.0f}x, cold {build / cold_t:,.0f}x (target >= 5,000x)")
    print(f"speed-up vs fvcore: warm {fv / warm:,.0f}x, cold {fv / cold_t:,.0f}x")
    official = FeatherFaceConfig()
    reps = 20
    b_off = statistics.median(per_config_us(lambda c: count_parameters(build_model(c)), [official] * reps))
    clear_caches()
    first = per_config_us(count, [official])[0]
    a_off = statistics.median(per_config_us(count, [official] * reps, repeat=200))
    print(f"official FeatherFace: build+numel {b_off:,.0f} us, analytic {a_off:.1f} us warm "
          f"({b_off / a_off:,.0f}x), {first:.1f} us on first sight ({b_off / first:,.0f}x)")


if __name__ == "__main__":
    main()
