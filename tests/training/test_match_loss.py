"""Prior matching, target encoding and the MultiBox loss against hand-checked cases and a plain
loop re-statement of RetinaFace's match."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featherface_tune.inference.decode import decode_boxes as decode
from featherface_tune.inference.decode import decode_landmarks as decode_landm
from featherface_tune.training.loss import MultiBoxLoss, hard_negatives
from featherface_tune.training.match import (
    encode, encode_landm, iou, make_priors, match, match_one, point_form,
)


def random_boxes(n: int, gen: torch.Generator, lo: float = 0.01, hi: float = 0.26) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * 0.5
    wh = torch.rand(n, 2, generator=gen) * (hi - lo) + lo
    return torch.cat((xy, xy + wh), 1)


def test_priors_layout():
    p = make_priors(64)
    # 8x8 cells x 2 anchors (16, 32 px), then 4x4 x 2 (64, 128), then 2x2 x 2 (256, 512)
    assert p.shape == (2 * (64 + 16 + 4), 4)
    torch.testing.assert_close(p[0], torch.tensor([4 / 64, 4 / 64, 16 / 64, 16 / 64]))
    torch.testing.assert_close(p[1], torch.tensor([4 / 64, 4 / 64, 32 / 64, 32 / 64]))
    torch.testing.assert_close(p[-1], torch.tensor([48 / 64, 48 / 64, 512 / 64, 512 / 64]))


def test_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(0)
    priors = make_priors(128)
    boxes = random_boxes(priors.shape[0], gen)
    torch.testing.assert_close(decode(encode(boxes, priors), priors), boxes, atol=1e-5, rtol=1e-5)
    pts = torch.rand(priors.shape[0], 10, generator=gen)
    torch.testing.assert_close(decode_landm(encode_landm(pts, priors), priors), pts, atol=1e-5, rtol=1e-5)


def test_encode_matches_the_inference_decoder():
    """The targets we train on decode back to the boxes with the predictor's decode."""
    dec = pytest.importorskip("featherface_tune.inference.decode")
    gen = torch.Generator().manual_seed(1)
    priors = make_priors(96)
    boxes = random_boxes(priors.shape[0], gen)
    pts = torch.rand(priors.shape[0], 10, generator=gen)
    torch.testing.assert_close(dec.decode_boxes(encode(boxes, priors), priors, dec.VARIANCES), boxes,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec.decode_landmarks(encode_landm(pts, priors), priors, dec.VARIANCES), pts,
                               atol=1e-5, rtol=1e-5)


def test_encode_values_by_hand():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    box = torch.tensor([[0.42, 0.44, 0.62, 0.64]])  # centre (0.52, 0.54), size 0.2
    torch.testing.assert_close(encode(box, prior), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), atol=1e-5, rtol=0)
    box2 = torch.tensor([[0.3, 0.3, 0.7, 0.7]])  # twice the prior: log(2) / 0.2
    assert abs(float(encode(box2, prior)[0, 2]) - float(np.log(2) / 0.2)) < 1e-5


def _np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    aa = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    ab = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return inter / (aa + ab - inter)


def reference_match(truths: np.ndarray, priors: np.ndarray, threshold: float = 0.35):
    """RetinaFace's match written as loops over faces and priors (labels, matched face per prior).
    Overlaps come from the module's iou (checked against numpy below) so float ties agree."""
    ov = iou(torch.from_numpy(truths[:, :4]), point_form(torch.from_numpy(priors))).numpy()
    n, p = ov.shape
    best_truth = np.full(p, -1)
    best_truth_ov = np.full(p, -1.0)
    for j in range(p):
        for i in range(n):
            if ov[i, j] > best_truth_ov[j]:
                best_truth_ov[j], best_truth[j] = ov[i, j], i
    for i in range(n):  # later faces overwrite earlier ones on a shared best prior
        bp = int(np.argmax(ov[i]))
        if ov[i, bp] >= 0.2:
            best_truth_ov[bp] = 2.0
            best_truth[bp] = i
    labels = (best_truth_ov >= threshold).astype(np.int64)
    return labels, best_truth


def test_iou_against_numpy():
    gen = torch.Generator().manual_seed(3)
    a, b = random_boxes(5, gen), random_boxes(7, gen)
    np.testing.assert_allclose(iou(a, b).numpy(), _np_iou(a.double().numpy(), b.double().numpy()), atol=1e-6)
    assert float(iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]]))) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(12))
def test_match_agrees_with_loop_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    priors = make_priors(128)
    n = int(torch.randint(1, 8, (1,), generator=gen))
    boxes = random_boxes(n, gen, 0.1, 0.5)
    if seed % 3 == 0:
        boxes = torch.cat((boxes, boxes[:1] + 0.001))  # two faces sharing a best prior
    t = torch.zeros(len(boxes), 15)
    t[:, :4] = boxes
    t[:, 4:14] = torch.rand(len(boxes), 10, generator=gen)
    t[:, 14] = torch.where(torch.rand(len(boxes), generator=gen) < 0.5, 1.0, -1.0)
    loc, labels, ldm, has = match_one(t, priors)
    ref_labels, ref_truth = reference_match(t.numpy(), priors.numpy())
    np.testing.assert_array_equal(labels.numpy(), ref_labels)
    pos = ref_labels == 1
    assert pos.any()
    want_loc = encode(boxes[ref_truth[pos]], priors[pos])
    torch.testing.assert_close(loc[torch.from_numpy(pos)], want_loc)
    want_has = (t[ref_truth, 14] > 0).numpy() & pos
    np.testing.assert_array_equal(has.numpy(), want_has)
    h = torch.from_numpy(want_has)
    torch.testing.assert_close(ldm[h], encode_landm(t[ref_truth[want_has], 4:14], priors[h]))


def test_match_threshold_and_forced_prior():
    priors = make_priors(64)
    pf = point_form(priors)
    t = torch.zeros(1, 15)
    t[0, :4] = pf[0]  # exactly the first prior (16 px at (4, 4))
    t[0, 14] = 1
    loc, labels, _, has = match_one(t, priors)
    assert labels[0] == 1 and has[0]
    torch.testing.assert_close(loc[0], torch.zeros(4), atol=1e-5, rtol=0)
    # a 10 px face: best IoU with any prior is below 0.35 but above 0.2: only its best prior is positive
    t2 = torch.zeros(1, 15)
    t2[0, :4] = torch.tensor([27.0, 27.0, 37.0, 37.0]) / 64
    t2[0, 14] = -1
    _, labels2, _, has2 = match_one(t2, priors)
    best = _np_iou(t2[:, :4].double().numpy(), pf.double().numpy())[0]
    assert 0.2 <= best.max() < 0.35
    assert labels2.sum() == 1 and labels2[int(best.argmax())] == 1 and not has2.any()
    # a 3 px face (best IoU < 0.2) is not forced: all background
    t3 = torch.zeros(1, 15)
    t3[0, :4] = torch.tensor([30.0, 30.0, 33.0, 33.0]) / 64
    assert match_one(t3, priors)[1].sum() == 0
    # zero-size boxes and images without faces give no positives and finite targets
    t4 = torch.zeros(2, 15)
    t4[:, :4] = torch.tensor([[0.5, 0.5, 0.5, 0.7], [0.1, 0.1, 0.1, 0.1]])
    for tt in (t4, torch.zeros(0, 15)):
        loc4, lab4, ldm4, _ = match_one(tt, priors)
        assert lab4.sum() == 0 and torch.isfinite(loc4).all() and torch.isfinite(ldm4).all()


def test_hard_negatives_ratio_and_choice():
    gen = torch.Generator().manual_seed(0)
    b, p = 3, 500
    loss = torch.rand(b, p, generator=gen)
    pos = torch.zeros(b, p, dtype=torch.bool)
    pos[0, :5] = True  # 5 faces -> 35 negatives
    pos[1, 10:13] = True  # 3 faces -> 21 negatives
    # image 2: no faces -> no negatives
    neg = hard_negatives(loss, pos, 7)
    assert neg.sum(1).tolist() == [35, 21, 0]
    assert not (neg & pos).any()
    for i, k in ((0, 35), (1, 21)):
        cand = loss[i].masked_fill(pos[i], -1)
        top = set(torch.topk(cand, k).indices.tolist())
        assert set(torch.nonzero(neg[i]).flatten().tolist()) == top
    # capped by the available priors
    small = hard_negatives(torch.rand(1, 10, generator=gen), torch.tensor([[True] * 3 + [False] * 7]), 7)
    assert small.sum() == 7


def _batch_targets():
    priors = make_priors(64)
    pf = point_form(priors)
    t_a = torch.zeros(2, 15)
    t_a[:, :4] = pf[[0, 40]]
    t_a[:, 4:14] = 0.3
    t_a[:, 14] = torch.tensor([1.0, -1.0])
    t_b = torch.zeros(0, 15)
    return priors, [t_a, t_b]


def test_loss_parts_by_hand():
    priors, targets = _batch_targets()
    p = priors.shape[0]
    m = match(targets, priors)
    n_pos = int(m.labels.sum())
    n_ldm = int(m.has_landmarks.sum())
    assert n_pos >= 2 and 1 <= n_ldm < n_pos
    loc = torch.zeros(2, p, 4)
    logits = torch.zeros(2, p, 2)  # every prior: CE = log 2
    ldm = torch.zeros(2, p, 10)
    parts = MultiBoxLoss()((loc, logits, ldm), priors, m)
    # classification: (faces + 7 x faces negatives) x log 2 / faces
    assert abs(float(parts.conf) - 8 * np.log(2)) < 1e-4
    sl1 = torch.nn.functional.smooth_l1_loss
    pos = m.labels > 0
    want_loc = sl1(torch.zeros_like(m.loc[pos]), m.loc[pos], reduction="sum") / n_pos
    want_ldm = sl1(torch.zeros_like(m.landmarks[m.has_landmarks]), m.landmarks[m.has_landmarks],
                   reduction="sum") / n_ldm
    torch.testing.assert_close(parts.loc, want_loc)
    torch.testing.assert_close(parts.landm, want_ldm)
    torch.testing.assert_close(parts.total, 2.0 * want_loc + parts.conf + want_ldm)
    # without a landmark head the landmark term is zero
    no_ldm = MultiBoxLoss()((loc, logits, None), priors, m)
    assert float(no_ldm.landm) == 0.0


def test_landmark_loss_only_on_faces_with_landmarks():
    priors, targets = _batch_targets()
    targets = [t.clone() for t in targets]
    targets[0][:, 14] = -1
    targets[0][:, 4:14] = -1
    p = priors.shape[0]
    ldm = torch.randn(2, p, 10, requires_grad=True)
    parts = MultiBoxLoss()((torch.zeros(2, p, 4), torch.zeros(2, p, 2), ldm), priors, targets)
    assert float(parts.landm.detach()) == 0.0 and parts.num_pos >= 2
    parts.total.backward()
    assert float(ldm.grad.abs().sum()) == 0.0


def test_loss_shape_mismatch_is_an_error():
    priors, targets = _batch_targets()
    with pytest.raises(ValueError, match="priors"):
        MultiBoxLoss()((torch.zeros(2, 7, 4), torch.zeros(2, 7, 2), None), priors, targets)
