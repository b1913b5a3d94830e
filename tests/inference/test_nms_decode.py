"""Decode, NMS, priors and post-processing against direct transcriptions of the RetinaFace code."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from featherface_tune.inference.decode import decode_boxes, decode_landmarks
from featherface_tune.inference.detector import Detections, postprocess, preprocess
from featherface_tune.inference.nms import nms, nms_plain
from featherface_tune.models.priors import prior_boxes


def py_cpu_nms_reference(dets: np.ndarray, thresh: float) -> list[int]:
    """RetinaFace utils/nms/py_cpu_nms.py, verbatim apart from a stable sort."""
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        inds = np.where(ovr <= thresh)[0]
        order = order[inds + 1]
    return keep


def naive_nms(boxes: list[list[float]], scores: list[float], thresh: float) -> list[int]:
    """Pure-Python greedy NMS with inclusive-pixel IoU (no numpy at all)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    suppressed = [False] * len(scores)
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if suppressed[j]:
                continue
            bi, bj = boxes[i], boxes[j]
            iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]) + 1)
            ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]) + 1)
            inter = iw * ih
            ai = (bi[2] - bi[0] + 1) * (bi[3] - bi[1] + 1)
            aj = (bj[2] - bj[0] + 1) * (bj[3] - bj[1] + 1)
            if inter / (ai + aj - inter) > thresh:
                suppressed[j] = True
    return keep


def _random_dets(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 200, size=(n, 2))
    wh = rng.uniform(2, 60, size=(n, 2))
    scores = rng.uniform(0, 1, size=n)
    return np.hstack((xy, xy + wh, scores[:, None])).astype(np.float32)


@pytest.mark.parametrize("seed,thresh", [(0, 0.4), (1, 0.3), (2, 0.5), (3, 0.1), (4, 0.7)])
def test_nms_matches_py_cpu_nms(seed: int, thresh: float) -> None:
    dets = _random_dets(np.random.default_rng(seed), 400)
    ref = py_cpu_nms_reference(dets, thresh)
    got = nms_plain(dets[:, :4], dets[:, 4], thresh).tolist()
    assert got == ref
    assert 5 < len(got) < 400  # the case really suppresses something
    # and the pure-python greedy definition gives the same set
    assert naive_nms(dets[:, :4].astype(float).tolist(), dets[:, 4].astype(float).tolist(), thresh) == ref


def test_nms_uses_inclusive_widths() -> None:
    # inclusive IoU = 50 / 150 = 0.333; exclusive IoU = 36 / 126 = 0.286
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert nms_plain(boxes, scores, 0.3).tolist() == [0]  # suppressed: +1 convention
    assert nms_plain(boxes, scores, 0.32).tolist() == [0]
    assert nms_plain(boxes, scores, 0.34).tolist() == [0, 1]
    # IoU exactly at the threshold is kept (py_cpu_nms keeps ovr <= thresh)
    assert nms_plain(boxes, scores, 1 / 3).tolist() == [0, 1]


def test_nms_torch_api_and_edge_cases() -> None:
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.4)
    assert keep.dtype == torch.int64 and keep.numel() == 0
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.9])
    assert nms(boxes, scores, 0.4).tolist() == [2, 1]  # ties in the official order (numpy's argsort reversed)
    assert nms(boxes, scores, 0.4, ties="stable").tolist() == [2, 0]  # ties in input order
    with pytest.raises(ValueError):
        nms(boxes, scores, 0.4, backend="nope")


def decode_reference(loc: torch.Tensor, priors: torch.Tensor, variances: list[float]) -> torch.Tensor:
    """RetinaFace utils/box_utils.py decode (in place on a fresh tensor)."""
    boxes = torch.cat((
        priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
        priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def test_decode_matches_retinaface() -> None:
    g = torch.Generator().manual_seed(0)
    priors = torch.rand(300, 4, generator=g) * 0.5 + 0.05
    loc = torch.randn(300, 4, generator=g)
    torch.testing.assert_close(decode_boxes(loc, priors), decode_reference(loc, priors, [0.1, 0.2]))
    pre = torch.randn(300, 10, generator=g)
    want = torch.cat([priors[:, :2] + pre[:, 2 * i:2 * i + 2] * 0.1 * priors[:, 2:] for i in range(5)], 1)
    torch.testing.assert_close(decode_landmarks(pre, priors), want)
    # zero regression -> the prior itself
    z = decode_boxes(torch.zeros(1, 4), torch.tensor([[0.5, 0.5, 0.2, 0.4]]))
    torch.testing.assert_close(z, torch.tensor([[0.4, 0.3, 0.6, 0.7]]))


def prior_box_reference(h: int, w: int) -> torch.Tensor:
    """RetinaFace layers/functions/prior_box.py PriorBox.forward for cfg_mnet."""
    min_sizes, steps = [[16, 32], [64, 128], [256, 512]], [8, 16, 32]
    anchors = []
    for k, step in enumerate(steps):
        fh, fw = math.ceil(h / step), math.ceil(w / step)
        for i, j in itertools.product(range(fh), range(fw)):
            for ms in min_sizes[k]:
                anchors += [(j + 0.5) * step / w, (i + 0.5) * step / h, ms / w, ms / h]
    return torch.tensor(anchors).view(-1, 4)


@pytest.mark.parametrize("h,w", [(64, 64), (100, 130), (37, 250)])
def test_priors_match_retinaface(h: int, w: int) -> None:
    torch.testing.assert_close(prior_boxes(h, w, 2), prior_box_reference(h, w))


def test_preprocess_is_bgr_minus_means() -> None:
    img = np.zeros((2, 3, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 50  # B, G, R
    x = preprocess(img)
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == [96.0, -17.0, -73.0]


def _outputs(h: int, w: int, hot: dict[int, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = prior_boxes(h, w, 2).shape[0]
    loc = torch.zeros(n, 4)
    logits = torch.zeros(n, 2)
    logits[:, 0] = 10.0  # background everywhere...
    for i, p in hot.items():  # ...except these priors, with face probability p
        logits[i, 0], logits[i, 1] = 0.0, math.log(p / (1 - p))
    return loc, logits, torch.zeros(n, 10)


def test_postprocess_threshold_topk_keep() -> None:
    h, w = 64, 96
    priors = prior_boxes(h, w, 2)
    loc, logits, ldm = _outputs(h, w, {0: 0.9, 2: 0.8, 40: 0.7, 41: 0.019})
    loc[2, 0] = -5.0  # prior 2 (next cell, 8 px right) regresses onto prior 0's box: -8 / (0.1 * 16)
    d = postprocess(loc, logits, ldm, (h, w), 2, conf=0.02, nms_iou=0.4)
    assert isinstance(d, Detections)
    # prior 41 is below conf -> dropped; prior 2 duplicates prior 0 -> suppressed
    assert d.scores.tolist() == pytest.approx([0.9, 0.7], abs=1e-5)
    want0 = decode_reference(loc[:1], priors[:1], [0.1, 0.2])[0] * torch.tensor([w, h, w, h])
    np.testing.assert_allclose(d.boxes[0], want0.numpy(), atol=1e-4)
    # landmarks with zero offsets sit on the prior centre
    np.testing.assert_allclose(d.landmarks[0], [priors[0, 0] * w, priors[0, 1] * h] * 5, atol=1e-4)
    assert len(postprocess(loc, logits, ldm, (h, w), 2, conf=0.02, keep=1)) == 1
    # top_k=1 sends only the best box into NMS
    assert len(postprocess(loc, logits, ldm, (h, w), 2, conf=0.02, top_k=1)) == 1
    assert len(postprocess(loc, logits, None, (h, w), 2, conf=0.75).scores) == 1
    assert postprocess(loc, logits, None, (h, w), 2).landmarks is None
    with pytest.raises(ValueError):
        postprocess(loc, logits, ldm, (h + 40, w), 2)
    assert d.above(0.8).scores.tolist() == pytest.approx([0.9], abs=1e-5)
    js = d.to_json()
    assert len(js) == 2 and len(js[0]["landmarks"]) == 5 and len(js[0]["box"]) == 4


def test_equal_scores_come_out_in_the_official_order() -> None:
    """py_cpu_nms sorts with numpy's default argsort, reversed: on exact ties that is not input order.
    The default ties="official" reproduces it (twice applied, as test_widerface.py sorts before NMS);
    ties="stable" keeps input order."""
    from featherface_tune.inference.nms import nms_plain

    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(40)], np.float32)  # no overlaps: all kept
    scores = np.array([0.5] * 20 + [0.7] * 20, np.float32)
    official = np.argsort(scores)[::-1]  # what py_cpu_nms does
    assert nms_plain(boxes, scores, 0.4).tolist() == official.tolist()
    assert nms_plain(boxes, scores, 0.4, ties="stable").tolist() == list(range(20, 40)) + list(range(20))
    assert official.tolist() != list(range(20, 40)) + list(range(20))  # the tie order matters here
