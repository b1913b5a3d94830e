"""Device check: training and prediction throughput on the GPU (if any) beside the CPU.

    python benchmarks/device_check.py [--preset featherface-official] [--batch-size 8] [--json]

On a machine with CUDA it prints, in well under 5 minutes, one line per figure, each containing
`images/s`:
* train images/s at 320 and 640 px (in-memory batches; AMP off, and AMP on: bf16, or fp16 with a
  grad scaler where the GPU has no bf16);
* predict images/s on a 1024x768 image (detect(): forward, decoding, NMS), one image per call and
  8 images per forward pass;
* the same figures on the CPU (fewer steps; threads: the project's default).
On a CPU-only machine it says there is no GPU, prints the CPU figures and exits 0.
Data: a small synthetic demo set (`featherface-tune demo-data`), so the matching cost is realistic.
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import compute_throughput  # noqa: E402


def predict_throughput(preset: str, device: torch.device, batch: int, calls: int, warmup: int = 1) -> dict:
    from featherface_tune.inference.detector import detect_batch
    from featherface_tune.inference.nms import backend_for
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.presets import get_preset

    torch.manual_seed(0)
    model = build_model(get_preset(preset)).eval().to(device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8) for _ in range(batch)]
    times = []
    for i in range(warmup + calls):
        t0 = time.perf_counter()
        detect_batch(model, images, nms_backend=backend_for(device))  # results come back to the host
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"device": str(device), "batch": batch, "s_per_call": round(med, 4),
            "images_per_s": round(batch / med, 2), "calls": calls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="featherface-official")
    ap.add_argument("--batch-size", type=int, default=8, help="training batch on the GPU (CPU: 4)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from featherface_tune.data.readers import read_any
    from featherface_tune.training.device import resolve_amp, set_threads

    threads = set_threads(None)
    cuda = torch.cuda.is_available()
    rows: list[dict] = []

    def show(kind: str, r: dict) -> None:
        rows.append({"kind": kind, **r})
        if args.json:
            return
        if kind == "train":
            amp = r["amp"] or "off"
            print(f"{r['device']:>7} train   {args.preset} @ {r['image_size']}px, batch {r['batch_size']}, "
                  f"AMP {amp:>8}: {r['images_per_s']:8.2f} images/s ({r['s_per_step']:.3f} s/step)", flush=True)
        else:
            print(f"{r['device']:>7} predict {args.preset} @ 1024x768, {r['batch']} image(s)/call: "
                  f"{r['images_per_s']:8.2f} images/s ({r['s_per_call']:.3f} s/call)", flush=True)

    t0 = time.perf_counter()
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}",
              flush=True)
    else:
        print(f"no GPU: torch.cuda.is_available() is False (torch {torch.__version__}); CPU figures only",
              flush=True)
    print(f"CPU: {threads} thread(s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "demo"
        subprocess.run([sys.executable, "-m", "featherface_tune.cli", "demo-data", str(data),
                        "--train", "16", "--val", "1"], check=True, capture_output=True)
        records = read_any(data, "train")
        if cuda:
            gpu = torch.device("cuda", 0)
            for size in (320, 640):
                for amp in (None, resolve_amp("auto", gpu)):
                    show("train", compute_throughput(records, args.preset, size, args.batch_size, 20, 5, gpu, amp))
            for batch in (1, 8):
                show("predict", predict_throughput(args.preset, gpu, batch, 10, warmup=3))
        cpu = torch.device("cpu")
        for size in (320, 640):
            show("train", compute_throughput(records, args.preset, size, 4, 3, 1, cpu, None))
        show("predict", predict_throughput(args.preset, cpu, 1, 3))
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"gpu": torch.cuda.get_device_name(0) if cuda else None, "cpu_threads": threads,
                          "preset": args.preset, "seconds": round(seconds, 1), "results": rows,
                          "data": "synthetic demo data"}, indent=2))
    else:
        print(f"done in {seconds:.0f} s (synthetic demo data)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
