"""RetinaFace training augmentation (data/data_augment.py `preproc`), re-written on numpy + Pillow.

Steps, in RetinaFace's order:
  1. random square crop: side = scale * short side, scale from (0.3, 0.45, 0.6, 0.8, 1.0); a crop is
     kept when at least one face lies fully inside it, and then keeps the faces whose centre lies
     inside, clipped to the crop (250 tries; if none works the whole image is used and padded);
  2. photometric distortion: brightness, contrast, saturation, hue, each with probability 1/2, in one
     of RetinaFace's two orders;
  3. pad to a square with the mean colour (only when no crop was found);
  4. horizontal mirror with probability 1/2, swapping left/right eyes (points 0, 1) and left/right
     mouth corners (points 3, 4);
  5. resize to image_size x image_size with a random interpolation, subtract the BGR means.

Images are BGR uint8 [H, W, 3] (as cv2 reads them). All randomness comes from one
`numpy.random.Generator`, so a sample is reproducible from its seed.

`image_ops` picks the library behind steps 2 (HSV) and 5 (resize): "opencv" is RetinaFace's own
(`cv2.cvtColor` with hue 0-179, `cv2.resize` without antialiasing), so given the same draws the
output equals the official pipeline's; "pillow" is the short recipe's (antialiased shrinking,
hue 0-255 scaled).

Targets leave as float32 [n, 15]: x1 y1 x2 y2 (normalised to [0, 1] by the augmented image size),
five landmarks x y (normalised likewise), and a label: 1 for a face with landmarks, -1 without
(RetinaFace's convention: both are faces; only label 1 feeds the landmark loss).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from featherface_tune.data.images import MEANS_BGR

CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
CROP_TRIES = 250
# Pillow filters standing in for cv2's INTER_LINEAR, INTER_CUBIC, INTER_AREA, INTER_NEAREST, INTER_LANCZOS4.
INTERPOLATIONS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.BOX,
                  Image.Resampling.NEAREST, Image.Resampling.LANCZOS)
# Pillow's hue runs 0..255 for a full turn; cv2's 0..179. RetinaFace shifts hue by randint(-18, 18) cv2 units.
_HUE_SCALE = 256.0 / 180.0
TARGET_WIDTH = 15
IMAGE_OPS = ("opencv", "pillow")


def to_targets(boxes_xywh: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """[n, 15] pixel targets from an ImageRecord's boxes (x y w h) and landmarks (-1 rows = none).

    Corners follow RetinaFace's loader: x2 = x + w, y2 = y + h. The label is -1 when the first
    landmark coordinate is negative (no landmarks), else 1.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4)
    ldm = np.asarray(landmarks, dtype=np.float32).reshape(-1, 10)
    if len(ldm) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(ldm)} landmark rows")
    out = np.empty((len(boxes), TARGET_WIDTH), dtype=np.float32)
    out[:, 0:2] = boxes[:, 0:2]
    out[:, 2:4] = boxes[:, 0:2] + boxes[:, 2:4]
    out[:, 4:14] = ldm
    out[:, 14] = np.where(ldm[:, 0] < 0, -1.0, 1.0) if len(ldm) else np.empty(0, np.float32)
    return out


def _iof(boxes: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Intersection over each box's own area (RetinaFace's matrix_iof against one roi)."""
    lt = np.maximum(boxes[:, :2], roi[:2])
    rb = np.minimum(boxes[:, 2:4], roi[2:])
    inter = np.prod(rb - lt, axis=1) * (lt < rb).all(axis=1)
    area = np.prod(boxes[:, 2:4] - boxes[:, :2], axis=1)
    return inter / np.maximum(area, 1)


def random_crop(image: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                tries: int = CROP_TRIES) -> tuple[np.ndarray, np.ndarray, bool]:
    """RetinaFace `_crop`: (image, targets in crop pixels, pad_needed)."""
    height, width = image.shape[:2]
    if len(targets) == 0:
        return image, targets, True
    boxes = targets[:, :4]
    short = min(width, height)
    centers = (boxes[:, :2] + boxes[:, 2:4]) / 2
    for _ in range(tries):
        scale = CROP_SCALES[int(rng.integers(len(CROP_SCALES)))]
        side = int(scale * short)
        if side < 1:
            continue
        left = 0 if width == side else int(rng.integers(width - side))
        top = 0 if height == side else int(rng.integers(height - side))
        roi = np.array((left, top, left + side, top + side), dtype=np.float32)
        if not (_iof(boxes, roi) >= 1).any():
            continue
        inside = ((roi[:2] < centers) & (centers < roi[2:])).all(axis=1)
        if not inside.any():
            continue
        t = targets[inside].copy()
        t[:, 0:2] = np.maximum(t[:, 0:2], roi[:2]) - roi[:2]
        t[:, 2:4] = np.minimum(t[:, 2:4], roi[2:]) - roi[:2]
        pts = t[:, 4:14].reshape(-1, 5, 2)
        pts[:] = np.clip(pts - roi[:2], 0, side)
        t[t[:, 14] < 0, 4:14] = -1.0  # faces without landmarks keep their -1 rows
        # RetinaFace then keeps faces with min(w + 1, h + 1) > 0 at training scale: all of them.
        return image[top:top + side, left:left + side], t, False
    return image, targets, True


def _convert(channel: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> None:
    """In place: channel * alpha + beta, clipped to 0..255 and truncated (as RetinaFace does).

    The map depends on the value alone, so it runs as a 256-entry lookup table."""
    lut = np.clip(np.arange(256, dtype=np.float64) * alpha + beta, 0, 255).astype(np.uint8)
    channel[...] = lut[channel]


def _cv2():  # type: ignore[no-untyped-def]
    import cv2  # opencv-python-headless; imported on first use (the gate and counting never need it)

    # one thread: samples are augmented one per DataLoader worker, and OpenCV's own pool (every core)
    # would compete with training's threads (see training.device); the results do not depend on it
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    return cv2


def _hsv_ops(image: np.ndarray, rng: np.random.Generator, image_ops: str = "pillow") -> np.ndarray:
    """Saturation then hue, each with probability 1/2, through HSV (BGR uint8 in and out)."""
    do_sat = bool(rng.integers(2))
    sat = float(rng.uniform(0.5, 1.5)) if do_sat else 1.0
    do_hue = bool(rng.integers(2))
    hue = int(rng.integers(-18, 19)) if do_hue else 0
    if image_ops == "opencv":
        # RetinaFace converts even when neither change is drawn (the round trip is not lossless)
        cv2 = _cv2()
        hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2HSV)
        if do_sat:
            _convert(hsv[:, :, 1], alpha=sat)
        if do_hue:
            hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int64) + hue) % 180).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not (do_sat or do_hue):
        return image
    hsv = np.array(Image.fromarray(np.ascontiguousarray(image[:, :, ::-1])).convert("HSV"))
    if do_sat:
        _convert(hsv[:, :, 1], alpha=sat)
    if do_hue:
        shift = int(round(hue * _HUE_SCALE))
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + shift) % 256).astype(np.uint8)
    rgb = np.asarray(Image.frombytes("HSV", (hsv.shape[1], hsv.shape[0]), hsv.tobytes()).convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def distort(image: np.ndarray, rng: np.random.Generator, image_ops: str = "pillow") -> np.ndarray:
    """RetinaFace `_distort`: photometric changes on a copy of a BGR uint8 image."""
    image = image.copy()
    if rng.integers(2):
        if rng.integers(2):
            _convert(image, beta=float(rng.uniform(-32, 32)))
        if rng.integers(2):
            _convert(image, alpha=float(rng.uniform(0.5, 1.5)))
        image = _hsv_ops(image, rng, image_ops)
    else:
        if rng.integers(2):
            _convert(image, beta=float(rng.uniform(-32, 32)))
        image = _hsv_ops(image, rng, image_ops)
        if rng.integers(2):
            _convert(image, alpha=float(rng.uniform(0.5, 1.5)))
    return image


def pad_to_square(image: np.ndarray, pad: bool) -> np.ndarray:
    """RetinaFace `_pad_to_square`: the image at the top left of a mean-filled square."""
    if not pad:
        return image
    h, w = image.shape[:2]
    side = max(h, w)
    if h == w:
        return image
    out = np.empty((side, side, 3), dtype=image.dtype)
    out[:] = np.array(MEANS_BGR, dtype=np.float32).astype(image.dtype)
    out[:h, :w] = image
    return out


def mirror(image: np.ndarray, targets: np.ndarray, do: bool) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of image and targets; landmarks swap left/right eye and mouth corners.

    Faces without landmarks (label -1) keep their -1 landmark rows.
    """
    if not do:
        return image, targets
    width = image.shape[1]
    image = image[:, ::-1]
    t = targets.copy()
    t[:, 0] = width - targets[:, 2]
    t[:, 2] = width - targets[:, 0]
    pts = t[:, 4:14].reshape(-1, 5, 2)
    pts[:, :, 0] = width - pts[:, :, 0]
    pts[:] = pts[:, [1, 0, 2, 4, 3], :]
    no_ldm = t[:, 14] < 0
    t[no_ldm, 4:14] = -1.0
    return image, t


def resize_subtract_mean(image: np.ndarray, size: int, interpolation: int, image_ops: str = "pillow") -> np.ndarray:
    """[3, size, size] float32 BGR minus the means (RetinaFace `_resize_subtract_mean`). interpolation
    indexes (LINEAR, CUBIC, AREA, NEAREST, LANCZOS4); with "opencv" cv2.resize runs even at the
    target size, as RetinaFace's does."""
    h, w = image.shape[:2]
    if image_ops == "opencv":
        cv2 = _cv2()
        flags = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)
        image = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=flags[interpolation])
    elif (h, w) != (size, size):
        # resampling treats the channels alike: hand Pillow the BGR bytes as they are
        pil = Image.fromarray(np.ascontiguousarray(image))
        image = np.asarray(pil.resize((size, size), resample=INTERPOLATIONS[interpolation]))
    out = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
    out -= np.array(MEANS_BGR, dtype=np.float32)[:, None, None]
    return out


def augment(image: np.ndarray, targets: np.ndarray, image_size: int,
            rng: np.random.Generator, image_ops: str = "pillow") -> tuple[np.ndarray, np.ndarray]:
    """The whole RetinaFace `preproc`: (float32 [3, S, S] image, float32 [n, 15] normalised targets)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    check_image_ops(image_ops)
    targets = np.asarray(targets, dtype=np.float32).reshape(-1, TARGET_WIDTH)
    img, t, pad = random_crop(image, targets, rng)
    img = distort(img, rng, image_ops)
    img = pad_to_square(img, pad)
    img, t = mirror(img, t, bool(rng.integers(2)))
    h, w = img.shape[:2]
    out = resize_subtract_mean(img, image_size, int(rng.integers(len(INTERPOLATIONS))), image_ops)
    return out, normalise_targets(t, w, h)


def check_image_ops(image_ops: str) -> None:
    if image_ops not in IMAGE_OPS:
        raise ValueError(f"image_ops {image_ops!r}: must be one of {', '.join(IMAGE_OPS)}")


def plain(image: np.ndarray, targets: np.ndarray, image_size: int,
          image_ops: str = "pillow") -> tuple[np.ndarray, np.ndarray]:
    """No augmentation: pad to square with the mean colour, resize bilinearly, subtract means."""
    check_image_ops(image_ops)
    targets = np.asarray(targets, dtype=np.float32).reshape(-1, TARGET_WIDTH)
    img = pad_to_square(image, True)
    h, w = img.shape[:2]
    out = resize_subtract_mean(img, image_size, 0, image_ops)
    return out, normalise_targets(targets, w, h)


def normalise_targets(targets: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pixel boxes and landmarks (landmarks only where flagged present) divided by the image size."""
    t = targets.copy()
    t[:, 0:4:2] /= w
    t[:, 1:4:2] /= h
    has = t[:, 14] > 0
    t[has, 4:14:2] /= w
    t[has, 5:14:2] /= h
    return t
