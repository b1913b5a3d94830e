"""The WIDERFace evaluator: hand-built cases with known AP, agreement with a deliberately naive loop
implementation of the issue's five steps, prediction-file reading, and the `evaluate` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.data.mat import SETTINGS, ground_truth_from_lists, read_ground_truth, write_ground_truth
from featherface_tune.errors import InputError
from featherface_tune.evaluation.widerface import (
    evaluate, evaluate_dir, read_prediction_file, read_predictions, write_predictions,
)

GT_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "widerface" / "ground_truth"
runner = CliRunner()


# ----------------------------------------------------------------------------- a naive reference

def naive_evaluate(preds, events, files, boxes, keep, iou_thresh=0.5, thresh_num=1000):
    """The issue's five steps, written as plainly as possible (Python loops, no vectorisation)."""
    # 1. min-max normalisation over all predictions (min starts at 1, max at 0)
    lo, hi = 1.0, 0.0
    for ev in preds.values():
        for rows in ev.values():
            for r in rows:
                lo = min(lo, r[4])
                hi = max(hi, r[4])
    norm = {}
    for e, ev in preds.items():
        norm[e] = {}
        for n, rows in ev.items():
            rows = sorted(rows, key=lambda r: -r[4])  # stable: ties keep file order
            with np.errstate(divide="ignore", invalid="ignore"):
                norm[e][n] = [list(r[:4]) + [float(np.float64(r[4] - lo) / np.float64(hi - lo))] for r in rows]

    def iou(a, b):
        ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
        bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
        iw = min(ax2, bx2) - max(ax1, bx1) + 1
        ih = min(ay2, by2) - max(ay1, by1) + 1
        if iw <= 0 or ih <= 0:
            return 0.0
        ua = (ax2 - ax1 + 1) * (ay2 - ay1 + 1) + (bx2 - bx1 + 1) * (by2 - by1 + 1) - iw * ih
        return iw * ih / ua

    aps = {}
    for setting in SETTINGS:
        face_count = 0
        proposals = [0.0] * thresh_num
        recalled = [0.0] * thresh_num
        for i, event in enumerate(events):
            for j, name in enumerate(files[i]):
                kept = set(int(k) - 1 for k in keep[setting][i][j])
                face_count += len(keep[setting][i][j])
                p = norm.get(event, {}).get(name, [])
                g = [list(map(float, b)) for b in boxes[i][j]]
                if not p or not g:
                    continue
                # 3. sequential matching
                status = []  # per prediction: "ignored", "tp", "fp"
                recalled_faces = set()
                for row in p:
                    best, best_k = -1.0, -1
                    for k, gb in enumerate(g):
                        v = iou(row, gb)
                        if v > best:
                            best, best_k = v, k
                    if best >= iou_thresh and best_k not in kept:
                        status.append("ignored")
                    elif best >= iou_thresh and best_k not in recalled_faces:
                        recalled_faces.add(best_k)
                        status.append("tp")
                    else:
                        status.append("fp")
                # 4. thresholds
                for t in range(thresh_num):
                    thresh = 1 - (t + 1) / thresh_num
                    n_prop = sum(1 for row, s in zip(p, status) if row[4] >= thresh and s != "ignored")
                    n_rec = sum(1 for row, s in zip(p, status) if row[4] >= thresh and s == "tp")
                    proposals[t] += n_prop
                    recalled[t] += n_rec
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = [np.float64(recalled[t]) / np.float64(proposals[t]) for t in range(thresh_num)]
            rec = [np.float64(recalled[t]) / np.float64(face_count) for t in range(thresh_num)]
        # 5. VOC AP
        mrec = [0.0] + rec + [1.0]
        mpre = [0.0] + prec + [0.0]
        for k in range(len(mpre) - 1, 0, -1):
            mpre[k - 1] = np.maximum(mpre[k - 1], mpre[k])
        ap = 0.0
        for k in range(len(mrec) - 1):
            if mrec[k + 1] != mrec[k]:
                ap += (mrec[k + 1] - mrec[k]) * mpre[k + 1]
        aps[setting] = float(ap)
    return aps


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    events = [f"{e}--Event{e}" for e in range(3)]
    files, boxes, keep = [], [], {s: [] for s in SETTINGS}
    preds = {}
    for e in events:
        names = [f"img_{e[0]}_{j}" for j in range(int(rng.integers(2, 6)))]
        files.append(names)
        ev_boxes = []
        for s in SETTINGS:
            keep[s].append([])
        preds[e] = {}
        for name in names:
            n = int(rng.integers(0, 8))
            xy = rng.integers(0, 300, (n, 2))
            wh = rng.integers(1, 80, (n, 2))
            b = np.column_stack([xy, wh]).astype(np.int32)
            ev_boxes.append(b)
            h = b[:, 3]
            hard = [k + 1 for k in range(n) if h[k] >= 10 and rng.random() < 0.95]
            medium = [k for k in hard if h[k - 1] >= 30]
            easy = [k for k in medium if h[k - 1] >= 50]
            for s, lst in zip(SETTINGS, (easy, medium, hard)):
                keep[s][-1].append(np.array(lst, dtype=np.int64))
            roll = rng.random()
            if roll < 0.1:
                continue  # no prediction file
            if roll < 0.15:
                preds[e][name] = np.zeros((0, 5))
                continue
            rows = []
            for k in range(n):
                for _ in range(int(rng.integers(0, 3))):
                    jit = b[k].astype(float) + rng.normal(0, 0.12, 4) * np.r_[b[k, 2:], b[k, 2:]]
                    rows.append(list(np.round(jit, 1)) + [round(float(rng.uniform(0, 1)), 2)])
            for _ in range(int(rng.integers(0, 5))):
                rows.append([float(rng.integers(0, 300)), float(rng.integers(0, 300)), float(rng.integers(1, 60)),
                             float(rng.integers(1, 60)), round(float(rng.uniform(0, 1)), 2)])
            arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
            rng.shuffle(arr)
            preds[e][name] = arr
        boxes.append(ev_boxes)
    preds["9--Extra"] = {"not_in_gt": np.array([[0, 0, 5, 5, 0.005]])}  # enters the normalisation only
    return events, files, boxes, keep, preds


# ----------------------------------------------------------------------------- hand-built cases

def one_image(boxes, keep_all=None, keep=None):
    boxes = np.array(boxes, dtype=np.int32).reshape(-1, 4)
    k = np.arange(1, len(boxes) + 1) if keep is None else np.array(keep, dtype=np.int64)
    return ground_truth_from_lists(["0--Hand"], [["a"]], [[boxes]], {s: [[k]] for s in SETTINGS})


def ap_of(gt, rows, extra=None):
    preds = {"0--Hand": {"a": np.array(rows, dtype=np.float64).reshape(-1, 5)}}
    if extra:
        preds.update(extra)
    return evaluate(preds, gt)


def test_perfect_detections_give_ap_one():
    gt = one_image([[10, 10, 40, 50], [100, 20, 30, 30]])
    r = ap_of(gt, [[10, 10, 40, 50, 0.9], [100, 20, 30, 30, 0.8]])
    assert r.ap == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert r.face_count == {"easy": 2, "medium": 2, "hard": 2}


def test_one_false_positive_above_one_true_positive_gives_half():
    gt = one_image([[10, 10, 40, 50]])
    r = ap_of(gt, [[300, 300, 20, 20, 0.9], [10, 10, 40, 50, 0.5]])
    assert r.ap["hard"] == 0.5
    # and below it: the face is found at precision 1 first
    r = ap_of(gt, [[300, 300, 20, 20, 0.5], [10, 10, 40, 50, 0.9]])
    assert r.ap["hard"] == 1.0


def test_prediction_on_ignored_face_is_neither_tp_nor_fp():
    # face 2 (tiny) is kept by no setting: a confident prediction on it must not count as a false positive
    gt = one_image([[10, 10, 40, 50], [200, 200, 6, 7]], keep=[1])
    r = ap_of(gt, [[200, 200, 6, 7, 0.9], [10, 10, 40, 50, 0.5]])
    assert r.ap["hard"] == 1.0 and r.face_count["hard"] == 1
    # the same prediction far from any face is a false positive
    r = ap_of(gt, [[400, 400, 6, 7, 0.9], [10, 10, 40, 50, 0.5]])
    assert r.ap["hard"] == 0.5


def test_duplicate_detection_is_a_false_positive():
    gt = one_image([[10, 10, 40, 50], [100, 20, 30, 30]])
    # duplicate on face 1 ranks above the detection of face 2: P-R points (1/1,.5) (1/2,.5)... (2/3, 1)
    r = ap_of(gt, [[10, 10, 40, 50, 0.9], [11, 10, 40, 50, 0.7], [100, 20, 30, 30, 0.5]])
    assert r.ap["hard"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3), abs=1e-15)


def test_inclusive_pixel_iou_decides_a_borderline_match():
    # gt corners (0,0,9,9): 10x10 pixels; prediction (0,0,9,4): 10x5 -> IoU 50/100 = 0.5 inclusive (a hit),
    # 36/81 = 0.44 with the exclusive convention (a miss)
    gt = one_image([[0, 0, 9, 9]])
    r = ap_of(gt, [[0, 0, 9, 4, 0.9], [300, 300, 5, 5, 0.1]])
    assert r.ap["hard"] == 1.0
    r = ap_of(gt, [[0, 0, 9, 3, 0.9], [300, 300, 5, 5, 0.1]])  # 40/100 < 0.5
    assert r.ap["hard"] == 0.0


def test_ties_in_iou_take_the_first_face():
    # two identical faces, only one kept: the prediction takes the first (tie), so what it hits decides
    gt_first_ignored = one_image([[10, 10, 40, 40], [10, 10, 40, 40]], keep=[2])
    gt_first_kept = one_image([[10, 10, 40, 40], [10, 10, 40, 40]], keep=[1])
    rows = [[10, 10, 40, 40, 0.9], [300, 300, 5, 5, 0.1]]
    assert ap_of(gt_first_ignored, rows).ap["hard"] == 0.0
    assert ap_of(gt_first_kept, rows).ap["hard"] == 1.0


def test_kept_faces_of_images_without_predictions_still_count():
    boxes = [[np.array([[10, 10, 40, 50]], np.int32), np.array([[10, 10, 40, 50]], np.int32)]]
    keep = [[np.array([1]), np.array([1])]]
    gt = ground_truth_from_lists(["0--Hand"], [["a", "b"]], boxes, {s: keep for s in SETTINGS})
    r = evaluate({"0--Hand": {"a": np.array([[10, 10, 40, 50, 0.9], [300, 300, 5, 5, 0.1]])}}, gt)
    assert r.ap["hard"] == 0.5 and r.images_without_predictions == 1
    assert any("no prediction file" in w and "0--Hand/b" in w for w in r.warnings)


def test_predictions_on_images_without_faces_are_not_false_positives():
    boxes = [[np.array([[10, 10, 40, 50]], np.int32), np.zeros((0, 4), np.int32)]]
    keep = [[np.array([1]), np.zeros(0)]]
    gt = ground_truth_from_lists(["0--Hand"], [["a", "b"]], boxes, {s: keep for s in SETTINGS})
    preds = {"0--Hand": {"a": np.array([[10, 10, 40, 50, 0.5]]), "b": np.array([[1, 1, 30, 30, 0.9]])}}
    assert evaluate(preds, gt).ap["hard"] == 1.0


def test_unsorted_file_equals_sorted_file():
    events, files, boxes, keep, preds = random_case(3)
    gt = ground_truth_from_lists(events, files, boxes, keep)
    sorted_preds = {e: {n: a[np.argsort(-a[:, 4], kind="stable")] for n, a in ev.items()} for e, ev in preds.items()}
    assert evaluate(preds, gt).ap == evaluate(sorted_preds, gt).ap


def test_extra_prediction_files_enter_the_normalisation():
    gt = one_image([[10, 10, 40, 50]])
    rows = [[10, 10, 40, 50, 0.5004], [300, 300, 20, 20, 0.5]]
    assert ap_of(gt, rows).ap["hard"] == 1.0  # normalised to 1 and 0: the TP comes first
    extra = {"9--Other": {"x": np.array([[0, 0, 5, 5, 0.0], [0, 0, 5, 5, 1.0]])}}
    r = ap_of(gt, rows, extra)  # now both land in the same 1/1000 threshold bucket
    assert r.ap["hard"] == 0.5
    assert any("match no ground-truth image" in w for w in r.warnings)


def test_normalisation_min_starts_at_one_and_max_at_zero():
    gt = one_image([[10, 10, 40, 50]])
    # scores above 1 (logits): the minimum stays 1, so 5.0 -> 1.0 and 4.999 -> 0.99975: one threshold bucket
    assert ap_of(gt, [[10, 10, 40, 50, 5.0], [300, 300, 20, 20, 4.999]]).ap["hard"] == 0.5
    # scores inside [0, 1] spread to the full range: the TP comes first
    assert ap_of(gt, [[10, 10, 40, 50, 0.5], [300, 300, 20, 20, 0.4999]]).ap["hard"] == 1.0
    # negative scores: the maximum stays 0, so -1.0 -> ~0.0001 and -1.0001 -> 0: only the last threshold (0)
    assert ap_of(gt, [[10, 10, 40, 50, -1.0], [300, 300, 20, 20, -1.0001]]).ap["hard"] == 0.5


def test_all_equal_scores_follow_the_standard_division_by_zero():
    gt = one_image([[10, 10, 40, 50]])
    r = ap_of(gt, [[10, 10, 40, 50, 0.7]])
    assert r.ap["hard"] == 0.0 and any("same score" in w for w in r.warnings)


def test_settings_use_their_own_keep_lists():
    boxes = [[np.array([[10, 10, 60, 60], [100, 100, 20, 20]], np.int32)]]
    keep = {"easy": [[np.array([1])]], "medium": [[np.array([1, 2])]], "hard": [[np.array([1, 2])]]}
    gt = ground_truth_from_lists(["0--Hand"], [["a"]], boxes, keep)
    # only the small face is detected (plus a low FP for a non-degenerate normalisation)
    r = evaluate({"0--Hand": {"a": np.array([[100, 100, 20, 20, 0.9], [400, 400, 5, 5, 0.1]])}}, gt)
    assert r.ap["easy"] == 0.0 and r.ap["medium"] == 0.5 and r.ap["hard"] == 0.5


# ----------------------------------------------------------------------------- against the naive loops

@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_implementation_on_random_data(seed):
    events, files, boxes, keep, preds = random_case(seed)
    gt = ground_truth_from_lists(events, files, boxes, keep)
    ours = evaluate(preds, gt).ap
    ref = naive_evaluate(preds, events, files, boxes, keep)
    assert set(ours) == set(ref)
    for s in SETTINGS:
        assert abs(ours[s] - ref[s]) <= 1e-9, (s, ours[s], ref[s])
    assert 0.0 < ours["hard"] < 1.0  # the case is not trivial


def test_naive_reference_uses_the_inclusive_convention_too():
    # the naive loops are an independent check only if they too score the borderline case as a hit
    gt = one_image([[0, 0, 9, 9]])
    rows = np.array([[0, 0, 9, 4, 0.9], [300, 300, 5, 5, 0.1]])
    ref = naive_evaluate({"0--Hand": {"a": rows}}, ["0--Hand"], [["a"]], [[np.array([[0, 0, 9, 9]])]],
                         {s: [[np.array([1])]] for s in SETTINGS})
    assert ref["hard"] == ap_of(gt, rows).ap["hard"] == 1.0


# ----------------------------------------------------------------------------- files and the command

def test_prediction_files_round_trip_and_errors(tmp_path):
    events, files, boxes, keep, preds = random_case(1)
    write_predictions(tmp_path / "pred", preds, sort=False)
    back = read_predictions(tmp_path / "pred")
    for e, ev in preds.items():
        for n, arr in ev.items():
            np.testing.assert_array_equal(back.boxes[e][n], arr.reshape(-1, 5))
    bad = tmp_path / "bad" / "0--E" / "x.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("x\n2\n1 2 3 4 0.5\n1 2 three 4 0.5\n")
    with pytest.raises(InputError, match=r"x\.txt:4: malformed box line"):
        read_prediction_file(bad)
    bad.write_text("x\n3\n1 2 3 4 0.5\n")
    with pytest.raises(InputError, match="announces 3 boxes but holds 1"):
        read_prediction_file(bad)
    bad.write_text("x\nmany\n")
    with pytest.raises(InputError, match=r"x\.txt:2: malformed box-count line"):
        read_prediction_file(bad)
    # the RetinaFace writer's trailing space and an empty file body are fine
    bad.write_text("x\n1\n1 2 3 4 0.5 \n")
    assert read_prediction_file(bad).shape == (1, 5)
    bad.write_text("x\n0\n")
    assert read_prediction_file(bad).shape == (0, 5)


def _write_gt(tmp_path):
    events, files, boxes, keep, preds = random_case(5)
    write_ground_truth(tmp_path / "gt", events, files, boxes, keep)
    return events, files, boxes, keep, preds


def test_evaluate_dir_equals_in_memory(tmp_path):
    events, files, boxes, keep, preds = _write_gt(tmp_path)
    write_predictions(tmp_path / "pred", preds)
    r = evaluate_dir(tmp_path / "pred", tmp_path / "gt")
    assert r.ap == evaluate(preds, ground_truth_from_lists(events, files, boxes, keep)).ap


def test_evaluate_command_json_and_table(tmp_path):
    events, files, boxes, keep, preds = _write_gt(tmp_path)
    perfect = {e: {n: np.column_stack([boxes[i][j], np.linspace(0.9, 0.1, len(boxes[i][j]))])
                   for j, n in enumerate(files[i])} for i, e in enumerate(events)}
    del perfect[events[0]][files[0][0]]  # one file missing -> warning, not failure
    write_predictions(tmp_path / "pred", perfect)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert list(data) == ["easy", "medium", "hard"] and all(isinstance(v, float) for v in data.values())
    assert "no prediction file" in r.stderr
    r = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert r.exit_code == 0 and "hard" in r.stdout and "easy" in r.stdout


def test_evaluate_command_one_line_errors(tmp_path):
    (tmp_path / "pred").mkdir()
    r = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), "--gt", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "ground-truth folder not found" in r.stderr and "Traceback" not in r.output
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "wider_face_val.mat").write_bytes(b"not a mat file")
    r = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert r.exit_code == 2 and "wider_face_val.mat" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- real ground truth

def test_full_val_set_agrees_with_naive_loops_on_a_sample():
    if not (GT_DIR / "wider_face_val.mat").is_file():
        pytest.skip(f"{GT_DIR} not present")

    gt = read_ground_truth(GT_DIR)
    rng = np.random.default_rng(0)
    preds = {}
    for i, e in enumerate(gt.events):
        preds[e] = {}
        for j, n in enumerate(gt.files[i]):
            g = gt.boxes[i][j].astype(float)
            jit = g + rng.normal(0, 2, g.shape)
            rand = np.column_stack([rng.uniform(0, 1000, (4, 2)), rng.uniform(5, 100, (4, 2))])
            b = np.vstack([jit[:8], rand])
            preds[e][n] = np.column_stack([b, np.round(rng.uniform(0, 1, len(b)), 3)])
    full = evaluate(preds, gt)  # its speed is benchmarks/eval_speed.py's business, not a test's
    # the naive loops on the first three events (a sub-ground-truth) agree exactly
    sub_events = list(gt.events[:3])
    sub = ground_truth_from_lists(sub_events, [gt.files[i] for i in range(3)], [gt.boxes[i] for i in range(3)],
                                  {s: [gt.keep[s][i] for i in range(3)] for s in SETTINGS})
    sub_preds = {e: preds[e] for e in sub_events}
    ours = evaluate(sub_preds, sub).ap
    ref = naive_evaluate(sub_preds, sub_events, sub.files, sub.boxes, sub.keep)
    for s in SETTINGS:
        assert abs(ours[s] - ref[s]) <= 1e-9
    assert 0 < full.ap["hard"] < 1
