"""RetinaFace augmentation: boxes and landmarks follow the pixels; mirror swaps left/right points."""

from __future__ import annotations

import numpy as np
import pytest

from featherface_tune.training.augment import (
    MEANS_BGR, augment, mirror, pad_to_square, plain, random_crop, to_targets,
)

# landmarks at fixed places relative to the box, left/right symmetric: a mirrored face with its
# points swapped has the same relative layout; without the swap, point 0 would sit at 0.7
REL = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], dtype=np.float32)


def face_image(h: int, w: int, box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Black image with one white square 'face'; targets with symmetric landmarks."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    x, y, bw, bh = box
    img[int(y):int(y + bh), int(x):int(x + bw)] = 255
    pts = np.array([x, y], np.float32) + REL * np.array([bw, bh], np.float32)
    return img, to_targets(np.array([box], np.float32), pts.reshape(1, 10))


def test_to_targets_corners_and_labels():
    boxes = np.array([[10, 20, 30, 40], [5, 5, 10, 10]], np.float32)
    ldm = np.stack([np.arange(10, dtype=np.float32), -np.ones(10, np.float32)])
    t = to_targets(boxes, ldm)
    assert t.shape == (2, 15)
    np.testing.assert_array_equal(t[0, :4], [10, 20, 40, 60])
    np.testing.assert_array_equal(t[:, 14], [1, -1])
    np.testing.assert_array_equal(t[1, 4:14], -1)


def test_mirror_flips_boxes_and_swaps_landmarks():
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :10] = 200  # a bright left edge
    t = np.zeros((1, 15), np.float32)
    t[0, :4] = [10, 5, 30, 25]
    t[0, 4:14] = [14, 10, 26, 10, 20, 15, 15, 20, 25, 20]  # left eye, right eye, nose, mouth l, r
    t[0, 14] = 1
    out, m = mirror(img, t, True)
    assert out[:, -10:].min() == 200 and out[:, :-10].max() == 0
    np.testing.assert_array_equal(m[0, :4], [70, 5, 90, 25])
    # new left eye = mirrored old right eye (100 - 26), new right eye = mirrored old left eye
    np.testing.assert_array_equal(m[0, 4:14], [74, 10, 86, 10, 80, 15, 75, 20, 85, 20])
    same, t2 = mirror(img, t, False)
    assert same is img and t2 is t


def test_mirror_keeps_missing_landmarks_missing():
    t = to_targets(np.array([[10, 5, 20, 20]], np.float32), -np.ones((1, 10), np.float32))
    _, m = mirror(np.zeros((40, 60, 3), np.uint8), t, True)
    np.testing.assert_array_equal(m[0, 4:14], -1)
    assert m[0, 14] == -1


def test_pad_to_square_fills_means():
    img = np.full((10, 30, 3), 7, np.uint8)
    out = pad_to_square(img, True)
    assert out.shape == (30, 30, 3)
    np.testing.assert_array_equal(out[:10], img)
    np.testing.assert_array_equal(out[10:].reshape(-1, 3)[0], np.array(MEANS_BGR, np.uint8))
    assert pad_to_square(img, False) is img


def test_random_crop_keeps_a_whole_face_and_clips_others():
    rng = np.random.default_rng(0)
    t = to_targets(np.array([[40, 40, 30, 30], [0, 0, 200, 20]], np.float32), -np.ones((2, 10), np.float32))
    img = np.zeros((200, 300, 3), np.uint8)
    for _ in range(50):
        crop, tc, pad = random_crop(img, t, rng)
        assert not pad
        side = crop.shape[0]
        assert crop.shape[:2] == (side, side) and side in {int(s * 200) for s in (0.3, 0.45, 0.6, 0.8, 1.0)}
        assert (tc[:, :4] >= 0).all() and (tc[:, :4] <= side).all()
        assert ((tc[:, 2] - tc[:, 0]) == 30).any()  # the small face is fully inside every crop


@pytest.mark.parametrize("seed", range(40))
def test_augment_boxes_and_landmarks_follow_the_pixels(seed):
    h, w = 240, 320
    rng = np.random.default_rng(1000 + seed)
    bw = float(rng.uniform(40, 90))
    box = (float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bw)), bw, bw)
    img, t = face_image(h, w, box)
    size = 128
    x, out = augment(img, t, size, np.random.default_rng(seed))
    assert x.shape == (3, size, size) and x.dtype == np.float32
    assert out.shape == (1, 15) and out[0, 14] == 1
    # the white square is the brightest thing in the picture after any photometric change
    pix = x.transpose(1, 2, 0) + np.array(MEANS_BGR, np.float32)
    grey = pix.mean(axis=2)
    ys, xs = np.nonzero(grey > 128)
    assert len(xs), "the face left the image"
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) / size
    np.testing.assert_allclose(out[0, :4], found, atol=3.0 / size)
    # landmarks keep their layout relative to the box (which also proves the mirror swap)
    x1, y1, x2, y2 = out[0, :4]
    rel = (out[0, 4:14].reshape(5, 2) - [x1, y1]) / [x2 - x1, y2 - y1]
    np.testing.assert_allclose(rel, REL, atol=1e-4)


def test_augment_is_seeded():
    img, t = face_image(100, 150, (30, 20, 40, 40))
    a = augment(img, t, 64, np.random.default_rng(5))
    b = augment(img, t, 64, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    outs = [augment(img, t, 64, np.random.default_rng(s))[0] for s in range(6)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_augment_image_without_faces_and_faces_without_landmarks():
    img = np.full((60, 90, 3), 100, np.uint8)
    x, t = augment(img, np.zeros((0, 15), np.float32), 64, np.random.default_rng(0))
    assert x.shape == (3, 64, 64) and t.shape == (0, 15)
    t0 = to_targets(np.array([[10, 10, 30, 30]], np.float32), -np.ones((1, 10), np.float32))
    for s in range(10):
        _, t1 = augment(img, t0, 64, np.random.default_rng(s))
        assert t1[0, 14] == -1
        np.testing.assert_array_equal(t1[0, 4:14], -1)
        assert (t1[0, :4] >= 0).all() and (t1[0, :4] <= 1).all()


def test_plain_pads_and_normalises():
    img, t = face_image(100, 200, (20, 10, 40, 40))
    x, out = plain(img, t, 64)
    assert x.shape == (3, 64, 64)
    np.testing.assert_allclose(out[0, :4], np.array([20, 10, 60, 50]) / 200)


def test_augment_rejects_non_bgr_uint8():
    with pytest.raises(ValueError, match="BGR uint8"):
        augment(np.zeros((10, 10), np.uint8), np.zeros((0, 15), np.float32), 32, np.random.default_rng(0))
