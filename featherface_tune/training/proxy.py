"""The proxy objective the search maximises: short training at a chosen fidelity, then WIDERFace
val AP (easy, medium or hard) with the standard evaluation.

`proxy_objective(cfg, data_dir, fidelity, trial)` trains on DATA/train, predicts DATA/val in the
RetinaFace test convention (featherface_tune.inference.detector) and evaluates against
DATA/ground_truth/*.mat (featherface_tune.evaluation.widerface). With an Optuna trial it evaluates
after every epoch, reports the AP (step = epoch) and raises optuna.TrialPruned when the pruner says
so. A NaN loss raises NonFiniteLoss (a FeatherFaceError): the search records the trial as failed with
that message.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from featherface_tune.data.records import ImageRecord
from featherface_tune.errors import InputError
from featherface_tune.models.config import FeatherFaceConfig
from featherface_tune.training.dataset import FaceDataset, stratified_subset
from featherface_tune.training.loop import StopReason, TrainResult, recalibrate_bn, train
# the proxy run's description is torch-free (the tuner checks it without torch); re-exported here
from featherface_tune.training.spec import Fidelity as Fidelity, check_pruner


# ---- evaluation on val -----------------------------------------------------------------------

def restrict_ground_truth(gt: Any, keep: set[tuple[str, str]]) -> Any:
    """The ground truth cut to the (event, stem) images in `keep` (events left empty are dropped)."""
    from featherface_tune.data.mat import FaceMat, GroundTruth

    f = gt.faces
    ev_idx, files, boxes = [], [], []
    sel: list[list[int]] = []
    for i, event in enumerate(f.events):
        js = [j for j, name in enumerate(f.files[i]) if (event, name) in keep]
        if js:
            ev_idx.append(i)
            sel.append(js)
            files.append(tuple(f.files[i][j] for j in js))
            boxes.append(tuple(f.boxes[i][j] for j in js))
    attrs = {k: tuple(tuple(v[i][j] for j in js) for i, js in zip(ev_idx, sel))
             for k, v in f.attributes.items()}
    faces = FaceMat(events=tuple(f.events[i] for i in ev_idx), files=tuple(files), boxes=tuple(boxes),
                    attributes=attrs)
    keep_lists = {s: tuple(tuple(gt.keep[s][i][j] for j in js) for i, js in zip(ev_idx, sel))
                  for s in gt.keep}
    return GroundTruth(faces=faces, keep=keep_lists)


VAL_CACHE_BYTES = 1 << 30  # decoded val images kept in memory between evaluations (1 GiB)


def predict_records(model: torch.nn.Module, records: Sequence[ImageRecord],
                    max_side: int | None = None,
                    images: dict[Path, tuple[np.ndarray, float]] | None = None,
                    batch_size: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """event -> stem -> [n, 5] x y w h score, as `predict` writes them in the official protocol (conf 0.02,
    NMS 0.4, no caps; coordinates truncated to integers as the prediction files hold them, so the proxy
    scores what a written file would score).

    max_side: shrink larger images first (bilinear) and scale the boxes back.
    images: optional cache of decoded (already shrunk) images by path, filled up to VAL_CACHE_BYTES.
    batch_size: images of the same size predicted in one forward pass (None: 8 on CUDA, 1 elsewhere;
    each image keeps its original size, so only equal shapes share a batch).
    """
    from featherface_tune.inference.detector import detect_batch, model_device
    from featherface_tune.inference.nms import backend_for

    device = model_device(model) if model is not None else torch.device("cpu")
    bs = batch_size if batch_size is not None else (8 if device.type == "cuda" else 1)
    backend = backend_for(device)
    out: dict[str, dict[str, np.ndarray]] = {}
    pending: dict[tuple[int, ...], list[tuple[ImageRecord, np.ndarray, float]]] = {}

    def flush(key: tuple[int, ...]) -> None:
        group = pending.pop(key)
        dets = detect_batch(model, [img for _, img, _ in group], nms_backend=backend)
        for (r, _, scale), det in zip(group, dets):
            b = np.trunc(det.boxes.astype(np.float64) / scale)  # evaluation.widerface.detection_rows' int()
            arr = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1],
                            det.scores.astype(np.float64)], axis=1) if len(det) else np.zeros((0, 5))
            out.setdefault(r.event, {})[r.name] = arr

    for r, img, scale in _val_images(records, max_side, images):
        pending.setdefault(img.shape, []).append((r, img, scale))
        if len(pending[img.shape]) >= bs:
            flush(img.shape)
    for key in list(pending):
        flush(key)
    return out


def _val_images(records: Sequence[ImageRecord], max_side: int | None,
                images: dict[Path, tuple[np.ndarray, float]] | None):  # type: ignore[no-untyped-def]
    """(record, BGR image, scale) per record, decoded (and shrunk) once and cached in `images`."""
    from PIL import Image

    from featherface_tune.data.images import read_image_bgr

    cached = sum(a.nbytes for a, _ in images.values()) if images is not None else 0
    for r in records:
        hit = images.get(r.path) if images is not None else None
        if hit is None:
            img = read_image_bgr(r.path)
            scale = 1.0
            h, w = img.shape[:2]
            if max_side is not None and max(h, w) > max_side:
                scale = max_side / max(h, w)
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                # resampling treats channels alike: the BGR bytes go through Pillow as they are
                img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
            if images is not None and cached + img.nbytes <= VAL_CACHE_BYTES:
                images[r.path] = (img, scale)
                cached += img.nbytes
        else:
            img, scale = hit
        yield r, img, scale


@dataclass(frozen=True)
class ValSet:
    records: tuple[ImageRecord, ...]
    gt: Any
    max_side: int | None
    images: dict[Path, tuple[np.ndarray, float]] | None

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        from featherface_tune.evaluation.widerface import evaluate

        preds = predict_records(model, self.records, self.max_side, self.images)
        return {k: float(v) for k, v in evaluate(preds, self.gt).ap.items()}


def load_val(data_dir: Path, val_subset: float = 1.0, seed: int = 0, max_side: int | None = None,
             cache: bool = True) -> ValSet:
    """Val records and ground truth (DATA/ground_truth, else DATA/val/ground_truth)."""
    from featherface_tune.data.mat import read_ground_truth
    from featherface_tune.data.readers import read_any

    data_dir = Path(data_dir)
    records: list[ImageRecord] = list(read_any(data_dir, "val"))
    gt_dir = next((p for p in (data_dir / "ground_truth", data_dir / "val" / "ground_truth") if p.is_dir()),
                  None)
    if gt_dir is None:
        raise InputError(f"no ground truth under {data_dir}: expected {data_dir / 'ground_truth'} "
                         "with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    gt = read_ground_truth(gt_dir)
    gt_images = gt.image_keys
    records = [r for r in records if (r.event, r.name) in gt_images]
    if records and val_subset < 1.0:
        records = stratified_subset(records, val_subset, seed)
        gt = restrict_ground_truth(gt, {(r.event, r.name) for r in records})
    if not records:
        raise InputError(f"no val image of {data_dir} is in the ground truth of {gt_dir}")
    return ValSet(tuple(records), gt, max_side, {} if cache else None)


# ---- the objective ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ProxyResult:
    ap: dict[str, float]
    value: float
    train: TrainResult
    seconds: float
    eval_seconds: float
    history: tuple[tuple[int, dict[str, float]], ...]  # (epoch, AP per setting) for each evaluation


def run_proxy(cfg: FeatherFaceConfig, data_dir: Path, fidelity: Mapping[str, Any] | Fidelity | None = None,
              trial: Any = None, out_dir: Path | None = None, progress: bool = False,
              train_records: Sequence[ImageRecord] | None = None, val: ValSet | None = None,
              device: str = "auto", amp: str = "auto", resume: bool = False) -> ProxyResult:
    """proxy_objective with the details (AP per setting, training history, timings).

    device/amp: where and in which precision training and val prediction run (training.device).
    resume: continue from out_dir/last.pt (a killed calibration run)."""
    fid = fidelity if isinstance(fidelity, Fidelity) else Fidelity.from_mapping(fidelity)
    t0 = time.perf_counter()
    if train_records is None:
        from featherface_tune.data.readers import read_any

        train_records = read_any(Path(data_dir), "train")
    if val is None:
        val = load_val(Path(data_dir), fid.val_subset, fid.seed, fid.val_max_side)
    history: list[tuple[int, dict[str, float]]] = []
    eval_s = [0.0]

    def evaluate(epoch: int, model: torch.nn.Module, train_set: FaceDataset) -> dict[str, float]:
        # BatchNorm statistics are recomputed on the images train() uses
        t = time.perf_counter()
        ap = val.evaluate(recalibrate_bn(model, train_set, fid.bn_recalibrate, fid.batch_size))
        eval_s[0] += time.perf_counter() - t
        history.append((epoch, ap))
        return ap

    def on_epoch_end(epoch: int, model: torch.nn.Module, train_set: FaceDataset) -> None:
        if trial is None or (epoch % fid.eval_every and epoch != fid.epochs):
            return
        ap = evaluate(epoch, model, train_set)[fid.metric]
        ap = ap if math.isfinite(ap) else 0.0
        trial.report(ap, epoch)
        if trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {fid.metric} AP {ap:.4f}")

    result = train(cfg, train_records, fid.train_options(out_dir, progress, device, amp, resume),
                   on_epoch_end=on_epoch_end)
    if history and history[-1][0] == result.epochs_completed and result.stopped is StopReason.COMPLETED:
        ap = history[-1][1]
    else:
        ap = evaluate(result.epochs_completed, result.model, result.dataset)
    value = ap[fid.metric]
    if not math.isfinite(value):
        value = 0.0
    if trial is not None and hasattr(trial, "set_user_attr"):
        # "proxy_ap" itself (a float) belongs to the search's records; these are extra details
        trial.set_user_attr("proxy_ap_settings", ap)
        trial.set_user_attr("proxy_epochs", result.epochs_completed)
        trial.set_user_attr("proxy_recipe", fid.recipe)  # which training recipe produced the AP
        trial.set_user_attr("proxy_stopped", result.stopped.value)
        trial.set_user_attr("proxy_train_seconds", round(result.seconds, 2))
        trial.set_user_attr("proxy_final_loss", result.history[-1].loss if result.history else None)
    return ProxyResult(ap=ap, value=value, train=result, seconds=time.perf_counter() - t0,
                       eval_seconds=eval_s[0], history=tuple(history))


def proxy_objective(cfg: FeatherFaceConfig, data_dir: Path, fidelity: Mapping[str, Any] | None = None,
                    trial: Any = None, device: str = "auto", amp: str = "auto") -> float:
    """Train `cfg` at `fidelity` on DATA/train and return val AP of fidelity['metric'] (default hard).

    fidelity keys: epochs, subset, image_size, time_budget, metric (easy/medium/hard), seed, and
    batch_size, optimizer, lr, val_subset, val_max_side, eval_every, pretrained, cache_images (see
    Fidelity). Raises optuna.TrialPruned when the trial's pruner stops it, NonFiniteLoss on a NaN loss.
    """
    fid = Fidelity.from_mapping(fidelity)
    train_records, val = _proxy_data(Path(data_dir).resolve(), fid.val_subset, fid.seed, fid.val_max_side)
    return run_proxy(cfg, Path(data_dir), fid, trial, train_records=train_records, val=val,
                     device=device, amp=amp).value


def make_pruner(name: str, max_epochs: int | None = None) -> Any:
    """Optuna pruner for a proxy search. median: stop a trial whose AP at an epoch is below the
    median of earlier trials at that epoch (after 5 trials, from epoch 2). hyperband: successive
    halving brackets with epochs as the resource (min 1, max `max_epochs`, reduction factor 3).
    none: every trial trains to the end."""
    import optuna

    check_pruner(name)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs or "auto",
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


@lru_cache(maxsize=2)
def _proxy_data(data_dir: Path, val_subset: float, seed: int,
                max_side: int | None) -> tuple[tuple[ImageRecord, ...], ValSet]:
    """Train records and the val set (with its decoded-image cache), read once per search process
    instead of once per trial."""
    from featherface_tune.data.readers import read_any

    return tuple(read_any(data_dir, "train")), load_val(data_dir, val_subset, seed, max_side)
