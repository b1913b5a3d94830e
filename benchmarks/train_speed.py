"""Training throughput: pure compute on in-memory tensors vs the full data pipeline.

    python benchmarks/train_speed.py [--data DIR] [--preset featherface-official] [--sizes 320 640]
                                     [--batch-size 4] [--steps 6] [--rounds 3] [--workers 0]
                                     [--threads N] [--device cpu] [--amp off] [--no-threads-pair] [--json]

Both paths run the same training step (forward, prior matching + MultiBox loss, backward, AdamW
step) on the same model:
* compute: batches augmented once beforehand and held as tensors (no decoding, no augmentation);
* pipeline: a DataLoader over FaceDataset that reads every JPEG with Pillow and runs the RetinaFace
  augmentation per sample (workers as given; 0 = in the main process).
The two are run in alternating blocks (`--rounds` x `--steps` steps each, after warm-up steps that
are not timed) so that load from other processes on the machine hits both alike. Reported: median
seconds per step, images/s, and the pipeline's overhead over pure compute in %.

Threads: the compute step is also timed with 1 thread and with the default thread count
(featherface_tune.training.device.default_threads: $OMP_NUM_THREADS, else the usable cores), in
alternating blocks, and printed as a pair: on a shared machine more threads can be much slower.

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


CPU = torch.device("cpu")


def step_fn(model, optimizer, criterion, priors, device=CPU, amp=None):  # type: ignore[no-untyped-def]
    """One training step as train() runs it (autocast forward, float32 loss, scaler for fp16);
    returns the loss, which also synchronises a GPU, so wall times are honest."""
    from featherface_tune.training.device import autocast, grad_scaler

    scaler = grad_scaler(device, amp)

    def step(images: torch.Tensor, targets: list[torch.Tensor]) -> float:
        images = images.to(device, non_blocking=device.type == "cuda")
        with autocast(device, amp):
            outs = model(images)
        parts = criterion(tuple(o.float() for o in outs), priors, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(parts.total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            parts.total.backward()
            optimizer.step()
        return float(parts.total.detach())
    return step


def make_step(preset: str, size: int, device=CPU, amp=None):  # type: ignore[no-untyped-def]
    """One training step of a fresh `preset` model at `size` (seeded, AdamW), on `device`."""
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.presets import get_preset
    from featherface_tune.training.loss import MultiBoxLoss
    from featherface_tune.training.match import make_priors

    torch.manual_seed(0)
    cfg = get_preset(preset)
    model = build_model(cfg).train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return step_fn(model, optimizer, MultiBoxLoss(), make_priors(size, cfg.anchors_per_cell).to(device), device, amp)


def compute_throughput(records, preset: str, size: int, batch: int, steps: int, warmup: int,
                       device=CPU, amp=None) -> dict:  # type: ignore[no-untyped-def]
    """Training images/s on in-memory batches (no data loading): the median step of `steps`."""
    from featherface_tune.training.dataset import FaceDataset, preload

    step = make_step(preset, size, device, amp)
    x, t = preload(FaceDataset(records, size, seed=0), batch)
    x = x.to(device)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step(x, t)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"image_size": size, "batch_size": batch, "device": str(device),
            "amp": None if amp is None else str(amp).replace("torch.", ""),
            "threads": torch.get_num_threads(), "s_per_step": round(med, 4),
            "images_per_s": round(batch / med, 2), "timed_steps": steps}


def bench_threads(records, preset: str, size: int, batch: int, steps: int, rounds: int, warmup: int,
                  counts: list[int]) -> dict:  # type: ignore[no-untyped-def]
    """Median compute seconds per step at each thread count, in alternating blocks."""
    from featherface_tune.training.dataset import FaceDataset, preload

    step = make_step(preset, size)
    x, t = preload(FaceDataset(records, size, seed=0), batch)
    old = torch.get_num_threads()
    times: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for r in range(rounds):
            for n in counts:
                torch.set_num_threads(n)
                for i in range((warmup if r == 0 else 0) + steps):
                    t0 = time.perf_counter()
                    step(x, t)
                    if r > 0 or i >= warmup:
                        times[n].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return {"image_size": size, "batch_size": batch,
            "threads": {str(n): {"s_per_step": round(statistics.median(v), 4),
                                 "images_per_s": round(batch / statistics.median(v), 2)}
                        for n, v in times.items()}}


def bench_size(records, preset: str, size: int, batch: int, steps: int, rounds: int, warmup: int,
               workers: int, device=CPU, amp=None) -> dict:  # type: ignore[no-untyped-def]
    from featherface_tune.training.dataset import EpochSampler, FaceDataset, collate, preload

    step = make_step(preset, size, device, amp)

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
                        persistent_workers=workers > 0, drop_last=True, pin_memory=device.type == "cuda")
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
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for the compute/pipeline figures (default: the project's default_threads)")
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N, mps")
    ap.add_argument("--amp", default="off", help="auto, off, bf16, fp16")
    ap.add_argument("--no-threads-pair", action="store_true", help="skip the 1-thread vs default pair")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from featherface_tune.training.device import default_threads, resolve_amp, resolve_device, set_threads

    device = resolve_device(args.device)
    amp = resolve_amp(args.amp, device)
    default_n = default_threads()
    set_threads(args.threads)

    from featherface_tune.data.readers import read_any

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "demo"
            subprocess.run([sys.executable, "-m", "featherface_tune.cli", "demo-data", str(data)],
                           check=True, capture_output=True)
        records = read_any(data, "train")
        results, pairs = [], []
        for size in args.sizes:
            r = bench_size(records, args.preset, size, args.batch_size, args.steps, args.rounds,
                           args.warmup, args.workers, device, amp)
            results.append(r)
            if not args.json:
                print(f"{args.preset} @ {size}px, batch {r['batch_size']}, workers {r['workers']}: "
                      f"compute {r['compute_images_per_s']:.2f} img/s ({r['compute_s_per_step']:.3f} s/step), "
                      f"with data pipeline {r['pipeline_images_per_s']:.2f} img/s "
                      f"({r['pipeline_s_per_step']:.3f} s/step): overhead {r['overhead_pct']:+.1f}% "
                      f"(data alone {r['data_only_s_per_batch'] * 1000:.0f} ms/batch)", flush=True)
        if not args.no_threads_pair:
            counts = sorted({1, default_n})
            for size in args.sizes:
                pr = bench_threads(records, args.preset, size, args.batch_size, args.steps, args.rounds,
                                   args.warmup, counts)
                pairs.append(pr)
                if not args.json:
                    figs = ", ".join(f"{n} thread{'s' if n != '1' else ''} {v['images_per_s']:.2f} images/s "
                                     f"({v['s_per_step']:.3f} s/step)" for n, v in pr["threads"].items())
                    note = "" if len(counts) > 1 else " (the default is 1 thread here)"
                    print(f"{args.preset} @ {size}px compute, threads: {figs}{note}", flush=True)
    summary = {"preset": args.preset, "threads": torch.get_num_threads(), "default_threads": default_n,
               "device": str(device), "amp": args.amp, "images": len(records),
               "data": str(args.data) if args.data else "synthetic demo data", "results": results,
               "threads_pair": pairs}
    if args.json:
        print(json.dumps(summary, indent=2))
    worst = max(r["overhead_pct"] for r in results)
    print(f"worst overhead {worst:+.1f}% (target: at most +15%)", file=sys.stderr)


if __name__ == "__main__":
    main()
