"""WIDERFace easy/medium/hard AP, the same numbers as the standard Python evaluation, vectorised.

The standard evaluation (``widerface_evaluate/evaluation.py``, distributed with RetinaFace) does:

1. normalise every prediction score with ``(s - lo) / (hi - lo)``, where ``lo`` is the minimum over all
   predictions of all prediction files, starting from 1, and ``hi`` the maximum, starting from 0;
2. per setting (easy, medium, hard), per image of the ``.mat`` file list: the setting's ``gt_list``
   (1-based) marks the kept faces; every kept face adds to the face count; an image with no
   predictions or no ground-truth boxes contributes nothing else;
3. corners are ``x2 = x + w``, ``y2 = y + h``; IoU is inclusive-pixel (width ``x2 - x1 + 1``). Each
   prediction, in file order, takes the ground-truth box of highest IoU (the first on ties); at IoU >= 0.5
   to a face that is not kept it is ignored (neither TP nor FP); at IoU >= 0.5 to a kept face not yet
   recalled it recalls that face; otherwise it is a false positive;
4. for 1,000 thresholds ``t_k = 1 - (k + 1) / 1000`` each image contributes the number of non-ignored
   predictions with score >= t_k and the number of faces recalled by them;
   precision = recalled / proposals, recall = recalled / face count, summed over images;
5. AP is the VOC area (recall padded with 0 and 1, precision with 0 and 0, precision made
   non-increasing from the right, summed where recall changes).

Here step 3 is computed once per image (which box each prediction hits does not depend on the
setting) and steps 2-4 are array operations over all predictions at once: the sum over images of
"non-ignored predictions with score >= t" is the number of such predictions over the whole set, found
with one sort and a search. Arithmetic is done in float64 in the same order as the standard code, so
the results agree bit for bit on score-sorted prediction files.

Differences, all on input the standard evaluator cannot handle or handles by accident:
* prediction files are sorted by score (descending, stable) before matching, as the official MATLAB
  code does; the standard Python code assumes they already are;
* an image with no prediction file counts as having no detections (with a warning); the standard code
  raises KeyError. Prediction files for images not in the ground truth still take part in the score
  normalisation, as in the standard code (reported as a note).
* predictions are keyed by the file stem (``PRED_DIR/<event>/<stem>.txt``); the standard code keys by
  the name written on the file's first line. The two agree for files written by ``predict``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from featherface_tune.data.mat import SETTINGS, GroundTruth, read_ground_truth
from featherface_tune.errors import InputError

IOU_THRESH = 0.5
THRESH_NUM = 1000

Predictions = Mapping[str, Mapping[str, np.ndarray]]  # event -> image stem -> [n, 5] x y w h score


@dataclass(frozen=True)
class PredictionSet:
    """Predictions read from a folder, with what the reader noticed."""

    boxes: Dict[str, Dict[str, np.ndarray]]
    file_count: int
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalResult:
    """AP per setting, the precision/recall curves (1,000 points each, highest threshold first), the
    kept-face counts, and the warnings gathered on the way."""

    ap: Dict[str, float]
    precision: Dict[str, np.ndarray] = field(repr=False)
    recall: Dict[str, np.ndarray] = field(repr=False)
    face_count: Dict[str, int]
    images: int
    images_without_predictions: int
    warnings: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, float]:
        return {s: float(self.ap[s]) for s in SETTINGS}


# ----------------------------------------------------------------------------- reading predictions

def _parse_pred_text(text: str, path: Path) -> np.ndarray:
    lines = text.splitlines()
    if len(lines) < 2:
        raise InputError(f"{path}: malformed prediction file: expected a name line and a count line")
    count_text = lines[1].strip()
    try:
        count = int(count_text)
    except ValueError:
        count = -1
    if count < 0:
        raise InputError(f"{path}:2: malformed box-count line {count_text[:40]!r} (expected an integer)")
    from featherface_tune.bounds import MAX_PREDICTION_BOXES

    if count > MAX_PREDICTION_BOXES:  # the evaluation pairs every box with every face: memory grows with it
        raise InputError(f"{path}:2: {count:,} boxes, more than the {MAX_PREDICTION_BOXES:,} a prediction file "
                         "may hold; predict again keeping fewer boxes per image (predict's keep option)")
    body = lines[2:]
    tokens = " ".join(body).split()
    if len(tokens) == 5 * count:
        try:
            arr = np.array(tokens, dtype=np.float64).reshape(count, 5)
        except ValueError:
            arr = None
        if arr is not None and np.isfinite(arr).all():
            return arr
    # slow path: find the offending line, tolerate extra columns (the standard reader uses the first 5)
    rows: List[List[float]] = []
    for k, line in enumerate(body, start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise InputError(f"{path}:{k}: malformed box line: expected 'x y w h score', got {line.strip()[:60]!r}")
        try:
            vals = [float(p) for p in parts[:5]]
        except ValueError:
            raise InputError(f"{path}:{k}: malformed box line: expected numbers, got {line.strip()[:60]!r}") from None
        if not all(np.isfinite(vals)):
            raise InputError(f"{path}:{k}: malformed box line: non-finite number in {line.strip()[:60]!r}")
        rows.append(vals)
    if len(rows) != count:
        raise InputError(f"{path}:2: the file announces {count} boxes but holds {len(rows)}")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_prediction_file(path: Path) -> np.ndarray:
    """One ``PRED_DIR/<event>/<stem>.txt``: name line, count line, ``x y w h score`` lines -> [n, 5]."""
    from featherface_tune.bounds import MAX_PREDICTION_BYTES, check_regular_file

    check_regular_file(Path(path), "prediction file", MAX_PREDICTION_BYTES)  # not a FIFO, not /dev/zero
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read prediction file {path}: {exc}") from None
    return _parse_pred_text(text, Path(path))


def read_predictions(pred_dir: Path) -> PredictionSet:
    """Read every ``<event>/<stem>.txt`` under ``pred_dir`` (other entries are ignored)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder not found: {pred_dir}")
    boxes: Dict[str, Dict[str, np.ndarray]] = {}
    n = 0
    for event_dir in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        ev: Dict[str, np.ndarray] = {}
        for f in sorted(event_dir.glob("*.txt")):
            ev[f.stem] = read_prediction_file(f)
            n += 1
        boxes[event_dir.name] = ev
    warnings: List[str] = []
    if n == 0:
        warnings.append(f"no prediction files (<event>/<image>.txt) under {pred_dir}")
    return PredictionSet(boxes=boxes, file_count=n, warnings=tuple(warnings))


# ----------------------------------------------------------------------------- the evaluation

def iou_inclusive(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """[N, K] IoU with the inclusive-pixel convention, the same float64 arithmetic as the standard
    ``bbox_overlaps`` (0 where boxes do not overlap by at least one pixel)."""
    p = pred_xyxy[:, None, :]
    g = gt_xyxy[None, :, :]
    gt_area = (g[..., 2] - g[..., 0] + 1) * (g[..., 3] - g[..., 1] + 1)
    iw = np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]) + 1
    ih = np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]) + 1
    ok = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ua = (p[..., 2] - p[..., 0] + 1) * (p[..., 3] - p[..., 1] + 1) + gt_area - iw * ih
        ov = iw * ih / ua
    return np.where(ok, ov, 0.0)


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # NaN propagates leftwards, as in the standard loop
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _sorted_desc(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64).reshape(-1, 5)
    if arr.shape[0] > 1 and np.any(arr[1:, 4] > arr[:-1, 4]):
        arr = arr[np.argsort(-arr[:, 4], kind="stable")]
    return arr


def evaluate(predictions: Predictions, gt: GroundTruth, iou_thresh: float = IOU_THRESH,
             thresh_num: int = THRESH_NUM) -> EvalResult:
    """Easy/medium/hard AP of ``predictions`` (event -> stem -> [n, 5] x y w h score) against ``gt``."""
    warnings: List[str] = []
    gt_keys = gt.image_keys

    # step 1: sort each image's boxes by score, normalise over every prediction (extra images included)
    preds: Dict[Tuple[str, str], np.ndarray] = {}
    lo, hi = 1.0, 0.0
    extra = 0
    for event, ev in predictions.items():
        for name, arr in ev.items():
            arr = _sorted_desc(arr)
            preds[(event, name)] = arr
            if (event, name) not in gt_keys:
                extra += 1
            if len(arr):
                lo = min(float(arr[:, 4].min()), lo)
                hi = max(float(arr[:, 4].max()), hi)
    diff = hi - lo
    if extra:
        warnings.append(f"{extra} prediction file(s) match no ground-truth image; their scores still enter the "
                        "score normalisation, as in the standard evaluation")
    if preds and diff == 0 and any(len(a) for a in preds.values()):
        warnings.append(f"every prediction has the same score ({lo}): the standard min-max normalisation divides by "
                        "zero, every score becomes NaN and AP is 0")

    # step 3 per image, once for all settings: which face each prediction hits (-1: none at >= iou_thresh)
    score_parts: List[np.ndarray] = []
    hit_parts: List[np.ndarray] = []
    face_offset = 0
    offsets: List[List[int]] = []
    missing: List[str] = []
    n_images = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, event in enumerate(gt.events):
            ev_off = []
            for j, name in enumerate(gt.files[i]):
                n_images += 1
                ev_off.append(face_offset)
                g = gt.boxes[i][j]
                k = len(g)
                p = preds.get((event, name))
                if p is None:
                    missing.append(f"{event}/{name}")
                if p is None or len(p) == 0 or k == 0:
                    face_offset += k
                    continue
                gf = g.astype(np.float64)
                gx = np.stack([gf[:, 0], gf[:, 1], gf[:, 2] + gf[:, 0], gf[:, 3] + gf[:, 1]], axis=1)
                px = np.stack([p[:, 0], p[:, 1], p[:, 2] + p[:, 0], p[:, 3] + p[:, 1]], axis=1)
                ov = iou_inclusive(px, gx)
                best = ov.argmax(axis=1)
                best_ov = ov[np.arange(len(p)), best]
                hit = np.where(best_ov >= iou_thresh, best + face_offset, -1)
                score_parts.append((p[:, 4] - lo) / diff)
                hit_parts.append(hit)
                face_offset += k
            offsets.append(ev_off)
    if missing:
        warnings.append(f"{len(missing)} of {n_images} images have no prediction file and count as no detections "
                        f"(first: {missing[0]})")
    scores = np.concatenate(score_parts) if score_parts else np.zeros(0)
    hits = np.concatenate(hit_parts) if hit_parts else np.zeros(0, dtype=np.int64)
    thresholds = 1 - (np.arange(thresh_num) + 1) / thresh_num
    # the score order and the threshold cut points are the same for every setting: computed once
    idx = np.flatnonzero(~np.isnan(scores))
    order = np.argsort(scores[idx], kind="stable")
    idx = idx[order]
    start = np.searchsorted(scores[idx], thresholds, side="left")  # first index with score >= t

    ap: Dict[str, float] = {}
    prec_out: Dict[str, np.ndarray] = {}
    rec_out: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    for setting in SETTINGS:
        kept = np.zeros(face_offset + 1, dtype=bool)  # last slot: "no face" for hits == -1
        count_face = 0
        for i in range(len(gt.events)):
            for j, keep in enumerate(gt.keep[setting][i]):
                count_face += len(keep)
                if len(keep):
                    kept[offsets[i][j] + keep - 1] = True
        hit_kept = kept[hits]  # hits == -1 reads the False sentinel
        ignored = (hits >= 0) & ~hit_kept
        proposal = (~ignored).astype(np.int64)
        recalled = np.zeros(len(hits), dtype=np.int64)
        cand = np.flatnonzero(hit_kept)
        if cand.size:
            _, first = np.unique(hits[cand], return_index=True)
            recalled[cand[first]] = 1
        prop_suffix = np.concatenate((np.cumsum(proposal[idx][::-1])[::-1], [0]))
        rec_suffix = np.concatenate((np.cumsum(recalled[idx][::-1])[::-1], [0]))
        proposals = prop_suffix[start].astype(np.float64)
        recalls = rec_suffix[start].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalls / proposals
            recall = recalls / count_face
        ap[setting] = voc_ap(recall, precision)
        prec_out[setting] = precision
        rec_out[setting] = recall
        counts[setting] = count_face
    return EvalResult(ap=ap, precision=prec_out, recall=rec_out, face_count=counts, images=n_images,
                      images_without_predictions=len(missing), warnings=tuple(warnings))


def evaluate_dir(pred_dir: Path, gt_dir: Path, iou_thresh: float = IOU_THRESH) -> EvalResult:
    """Read ``PRED_DIR/<event>/<stem>.txt`` and the four ``.mat`` files in ``gt_dir``; evaluate."""
    gt = read_ground_truth(Path(gt_dir))
    preds = read_predictions(Path(pred_dir))
    result = evaluate(preds.boxes, gt, iou_thresh=iou_thresh)
    if preds.warnings:
        return dataclasses.replace(result, warnings=preds.warnings + result.warnings)
    return result


def prediction_text(name: str, rows: Sequence[str]) -> str:
    """One prediction file of the standard layout (RetinaFace's test_widerface.py, read back by
    ``read_prediction_file``): the image name, the box count, then one ``x y w h score`` line per box."""
    return "\n".join([name, str(len(rows)), *rows]) + "\n"


def detection_rows(boxes: Any, scores: Any, float_coords: bool = False) -> list[str]:
    """``x y w h score`` lines of corner boxes ``x1 y1 x2 y2`` as RetinaFace writes them: coordinates
    truncated to integers (w = int(x2) - int(x1)), or with 2 decimals when ``float_coords``; the score
    printed as a float32."""
    rows = []
    for (x1, y1, x2, y2), s in zip(np.asarray(boxes).tolist(), np.asarray(scores).tolist()):
        score = str(np.float32(s))
        if float_coords:
            rows.append(f"{x1:.2f} {y1:.2f} {x2 - x1:.2f} {y2 - y1:.2f} {score}")
        else:
            rows.append(f"{int(x1)} {int(y1)} {int(x2) - int(x1)} {int(y2) - int(y1)} {score}")
    return rows


def write_prediction_file(folder: Path, name: str, text: str) -> Path:
    """Write ``folder/name.txt`` (creating the folder): the one place prediction files are written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def write_predictions(pred_dir: Path, predictions: Predictions, sort: bool = True) -> int:
    """Write predictions in the standard layout (``prediction_text``; values exact as ``repr`` of the
    float64, sorted by score unless ``sort`` is False). Returns the number of files written."""
    pred_dir = Path(pred_dir)
    n = 0
    for event, ev in predictions.items():
        for name, arr in ev.items():
            arr = np.asarray(arr, dtype=np.float64).reshape(-1, 5)
            if sort:
                arr = arr[np.argsort(-arr[:, 4], kind="stable")]
            rows = [" ".join(repr(float(v)) for v in row) for row in arr]
            write_prediction_file(pred_dir / event, name, prediction_text(name, rows))
            n += 1
    return n
