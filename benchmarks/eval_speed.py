"""Time the WIDERFace evaluator on a full-size val set (optionally beside the standard one).

Predictions are synthetic: for every image of the real ``wider_face_val.mat``, about a dozen boxes —
jittered ground-truth boxes plus random boxes — with random scores, written in the standard layout.

    python benchmarks/eval_speed.py [--gt DIR] [--boxes 12] [--repeat 5] [--reference DIR]

``--reference DIR`` names a folder holding the standard ``evaluation.py`` (RetinaFace's
``widerface_evaluate``). It is imported with small stand-ins for what it needs but this benchmark does
not ship: ``tqdm`` (pass-through), ``IPython.embed`` (unused) and, unless a compiled ``bbox`` module sits
in that folder (``python setup.py build_ext --inplace``; on numpy >= 1.24 change ``np.float`` to
``np.float64`` in box_overlaps.pyx first), ``bbox.bbox_overlaps`` re-expressed with numpy (same float64
formula as box_overlaps.pyx). Its AP is parsed from its
printout (which prints the full float repr) and compared with ours.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

DEFAULT_GT = Path(__file__).resolve().parents[1] / ".." / "shared" / "widerface" / "ground_truth"


def make_predictions(gt, boxes_per_image: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    preds = {}
    for i, event in enumerate(gt.events):
        ev = {}
        for j, name in enumerate(gt.files[i]):
            g = gt.boxes[i][j].astype(np.float64)
            n_true = min(len(g), int(rng.integers(0, boxes_per_image + 1)))
            pick = rng.choice(len(g), size=n_true, replace=False) if n_true else np.zeros(0, dtype=int)
            tb = g[pick].copy()
            if n_true:
                s = np.maximum(tb[:, 2:4], 1.0)
                tb[:, 0:2] += rng.normal(0, 0.1, (n_true, 2)) * s
                tb[:, 2:4] = np.maximum(1.0, tb[:, 2:4] * rng.lognormal(0, 0.1, (n_true, 2)))
            n_rand = boxes_per_image - n_true
            rb = np.column_stack([rng.uniform(0, 1000, n_rand), rng.uniform(0, 1000, n_rand),
                                  rng.uniform(5, 200, n_rand), rng.uniform(5, 200, n_rand)])
            b = np.round(np.vstack([tb, rb]), 1)
            scores = np.round(np.concatenate([rng.uniform(0.3, 1.0, n_true), rng.uniform(0.02, 0.8, n_rand)]), 6)
            arr = np.column_stack([b, scores])
            ev[name] = arr[np.argsort(-arr[:, 4], kind="stable")]
        preds[event] = ev
    return preds


def load_reference(ref_dir: Path) -> types.ModuleType:
    """Import the standard evaluation.py with stand-ins for tqdm, IPython and the cython bbox module."""

    class _Tqdm:
        def __init__(self, it=None, *a, **k):  # type: ignore[no-untyped-def]
            self.it = it

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(self.it)

        def set_description(self, *a, **k):  # type: ignore[no-untyped-def]
            pass

    def bbox_overlaps(boxes: np.ndarray, query: np.ndarray) -> np.ndarray:
        boxes = boxes.astype(np.float64)
        query = query.astype(np.float64)
        out = np.zeros((boxes.shape[0], query.shape[0]))
        for k in range(query.shape[0]):
            q = query[k]
            box_area = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
            iw = np.minimum(boxes[:, 2], q[2]) - np.maximum(boxes[:, 0], q[0]) + 1
            ih = np.minimum(boxes[:, 3], q[3]) - np.maximum(boxes[:, 1], q[1]) + 1
            ok = (iw > 0) & (ih > 0)
            ua = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1) + box_area - iw * ih
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, k] = np.where(ok, iw * ih / ua, 0.0)
        return out

    stubs = {
        "tqdm": types.SimpleNamespace(tqdm=_Tqdm),
        "IPython": types.SimpleNamespace(embed=lambda *a, **k: None),
    }
    for name, mod in stubs.items():
        sys.modules.setdefault(name, mod)  # type: ignore[arg-type]
    sys.path.insert(0, str(ref_dir))
    try:  # the compiled bbox module, if it was built in ref_dir (python setup.py build_ext --inplace)
        import bbox  # type: ignore[import-not-found]  # noqa: F401

        print(f"reference: compiled bbox_overlaps from {bbox.__file__}")
    except ImportError:
        sys.modules["bbox"] = types.SimpleNamespace(bbox_overlaps=bbox_overlaps)  # type: ignore[assignment]
        print("reference: no compiled bbox module in the reference folder; using a numpy bbox_overlaps")
    spec = importlib.util.spec_from_file_location("standard_widerface_evaluation", Path(ref_dir) / "evaluation.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {ref_dir}/evaluation.py")
    module = importlib.util.module_from_spec(spec)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module


def run_reference(module: types.ModuleType, pred_dir: Path, gt_dir: Path) -> dict:
    buf = io.StringIO()
    import warnings

    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.evaluation(str(pred_dir), str(gt_dir))
    aps = {}
    for line in buf.getvalue().splitlines():
        for setting in ("easy", "medium", "hard"):
            if line.lower().startswith(setting) and "Val AP:" in line:
                aps[setting] = float(line.split("Val AP:")[1])
    return aps


def main() -> None:
    from featherface_tune.data.mat import read_ground_truth
    from featherface_tune.evaluation.widerface import evaluate_dir, write_predictions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, default=DEFAULT_GT, help="folder with the four standard .mat files")
    ap.add_argument("--boxes", type=int, default=12, help="predicted boxes per image")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of our evaluator")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", type=Path, default=None, help="folder with the standard evaluation.py")
    args = ap.parse_args()

    gt_dir = args.gt.resolve()
    if not (gt_dir / "wider_face_val.mat").is_file():
        print(f"skipped: no wider_face_val.mat under {gt_dir} (pass --gt DIR)", file=sys.stderr)
        return
    gt = read_ground_truth(gt_dir)
    preds = make_predictions(gt, args.boxes, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(tmp) / "pred"
        n = write_predictions(pred_dir, preds)
        print(f"val set: {gt.faces.image_count} images, {gt.faces.face_count} faces; "
              f"{n} prediction files, {sum(len(a) for ev in preds.values() for a in ev.values())} boxes")
        times = []
        result = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = evaluate_dir(pred_dir, gt_dir)
            times.append(time.perf_counter() - t0)
        assert result is not None
        ours = statistics.median(times)
        print(f"featherface-tune evaluate: median {ours:.3f} s over {args.repeat} runs (min {min(times):.3f} s), "
              "reading predictions included")
        print("  AP " + "  ".join(f"{k} {v:.6f}" for k, v in result.ap.items()))
        if args.reference is not None:
            module = load_reference(args.reference)
            t0 = time.perf_counter()
            ref = run_reference(module, pred_dir, gt_dir)
            t_ref = time.perf_counter() - t0
            diff = max(abs(ref[k] - result.ap[k]) for k in ref)
            print(f"standard evaluation.py: {t_ref:.3f} s; speed-up {t_ref / ours:.1f}x")
            print("  AP " + "  ".join(f"{k} {v:.6f}" for k, v in ref.items()))
            print(f"  max |AP difference|: {diff:.3e}")


if __name__ == "__main__":
    main()
