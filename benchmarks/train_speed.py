"""Training throughput: pure compute on in-memory tensors vs the full data pipeline.

    python benchmarks/train_speed.py [--data DIR] [--preset featherface-official] [--sizes 320 640]
                                     [--batch-size 4] [--steps 6] [--rounds 3] [--workers 0]
                                     [--threads N] [--json]

Both paths run the same training step (forward, prior matching + MultiBox loss, backward, AdamW
step) on the same model:
* compute: batches augmented once beforehand and held as tensors (no decoding, no augmentation);
* pipeline: a DataLoader over FaceDataset that reads every JPEG with Pillow and runs the RetinaFace
  augmentation per sample (workers as given; 0 = in the main process).
The two are run in alternating blocks (`--rounds` x `--steps` steps each, after warm-up steps that
are not timed) so that load from other processes on the machine hits both alike. Reported: median
seconds per step, images/s, and the pipeline's overhead over pure compute in %.

Data: `--data DIR` (RetinaFace or official layout, train split) or, by default, a fresh synthetic
demo set (`featherface-tune demo-data`, images about 250-640 px; real WIDERFace images are about
1024 px wide, so decoding costs more there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def step_fn(model, optimizer, criterion, priors):  # type: ignore[no-untyped-def]
    def step(images: torch.Tensor, targets: list[torch.Tensor]) -> float:
        parts = criterion(model(images), priors, targets)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        return float(parts.total.detach())
    return step


def bench_size(records, preset: str, size: int, batch: int, steps: int, rounds: int, warmup: int,
               workers: int) -> dict:  # type: ignore[no-untyped-def]
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.presets import get_preset
    from featherface_tune.training.dataset import EpochSampler, FaceDataset, collate, preload
    from featherface_tune.training.loss import MultiBoxLoss
    from featherface_tune.training.match import make_priors

    torch.manual_seed(0)
    cfg = get_preset(preset)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step = step_fn(model, optimizer, MultiBoxLoss(), make_priors(size, cfg.anchors_per_cell))

    ds = FaceDataset(records, size, seed=0)
    n_mem = batch * 4
    mem_x, mem_t = preload(ds, n_mem)

    def mem_batches():
        i = 0
        while True:
            j = (i * batch) % n_mem
            yield mem_x[j:j + batch], mem_t[j:j + batch]
            i += 1

    sampler = EpochSampler(len(ds), seed=0)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)
    epoch = [0]

    def pipe_batches():
        while True:
            sampler.set_epoch(epoch[0])
            yield from loader
            epoch[0] += 1

    mem_it, pipe_it = mem_batches(), pipe_batches()

    def timed(it, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            x, t = next(it)  # for the pipeline: decode + augment (or wait for a worker)
            step(x, t)
            out.append(time.perf_counter() - t0)
        return out

    timed(mem_it, warmup)
    timed(pipe_it, warmup)
    compute, pipeline = [], []
    for _ in range(rounds):
        compute += timed(mem_it, steps)
        pipeline += timed(pipe_it, steps)
    # data-only cost per batch, for reference (decode + augment + collate, no training)
    t0 = time.perf_counter()
    n_data = max(4, steps)
    for _ in range(n_data):
        next(pipe_it)
    data_only = (time.perf_counter() - t0) / n_data
    c, p = statistics.median(compute), statistics.median(pipeline)
    return {"image_size": size, "batch_size": batch, "workers": workers,
            "compute_s_per_step": round(c, 4), "pipeline_s_per_step": round(p, 4),
            "compute_images_per_s": round(batch / c, 2), "pipeline_images_per_s": round(batch / p, 2),
            "overhead_pct": round(100.0 * (p / c - 1.0), 1),
            "data_only_s_per_batch": round(data_only, 4), "timed_steps": len(compute)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="dataset root (default: fresh demo data)")
    ap.add_argument("--preset", default="featherface-official")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per block")
    ap.add_argument("--rounds", type=int, default=3, help="alternating compute/pipeline blocks")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from featherface_tune.data.readers import read_any

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "demo"
            subprocess.run([sys.executable, "-m", "featherface_tune.cli", "demo-data", str(data)],
                           check=True, capture_output=True)
        records = read_any(data, "train")
        results = []
        for size in args.sizes:
            r = bench_size(records, args.preset, size, args.batch_size, args.steps, args.rounds,
                           args.warmup, args.workers)
            results.append(r)
            if not args.json:
                print(f"{args.preset} @ {size}px, batch {r['batch_size']}, workers {r['workers']}: "
                      f"compute {r['compute_images_per_s']:.2f} img/s ({r['compute_s_per_step']:.3f} s/step), "
                      f"with data pipeline {r['pipeline_images_per_s']:.2f} img/s "
                      f"({r['pipeline_s_per_step']:.3f} s/step): overhead {r['overhead_pct']:+.1f}% "
                      f"(data alone {r['data_only_s_per_batch'] * 1000:.0f} ms/batch)", flush=True)
    summary = {"preset": args.preset, "threads": torch.get_num_threads(), "images": len(records),
               "data": str(args.data) if args.data else "synthetic demo data", "results": results}
    if args.json:
        print(json.dumps(summary, indent=2))
    worst = max(r["overhead_pct"] for r in results)
    print(f"worst overhead {worst:+.1f}% (target: at most +15%)", file=sys.stderr)


if __name__ == "__main__":
    main()
