"""Reading images the way RetinaFace's cv2 code sees them, for training and inference alike."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from featherface_tune.errors import InputError, first_line

# Per-channel means subtracted from BGR pixels by RetinaFace and FeatherFace (train and test).
MEANS_BGR: tuple[float, float, float] = (104.0, 117.0, 123.0)
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS (a 9,459 x 9,459 image)


def read_image_bgr(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 BGR array (what cv2.imread gives), with Pillow.

    EXIF orientation is applied (as cv2.imread does), grey and palette images become 3-channel, an
    alpha channel is dropped. Raises InputError when the file is missing or not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"image {str(p)!r} does not exist")
    size = ""
    try:
        with warnings.catch_warnings():  # the header only: refuse a huge image before decoding it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            size = f"{w}x{h} pixels"
    except Image.DecompressionBombError as exc:  # Pillow refuses it already (twice its pixel limit)
        import re

        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(m.group(1)):,} pixels" if m else "more pixels than Pillow allows"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {str(p)!r}: {first_line(exc, 160)}") from None
    if size:
        raise InputError(f"image {str(p)!r} is too large: {size} (limit {MAX_IMAGE_PIXELS:,} pixels, "
                         "Pillow's decompression-bomb bound)")
    try:
        with Image.open(p) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            rgb = np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {str(p)!r}: {first_line(exc, 160)}") from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(f"image {str(p)!r} is empty")
    return np.ascontiguousarray(rgb[:, :, ::-1])
