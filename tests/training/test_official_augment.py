"""The OpenCV augmentation (`image_ops="opencv"`, the official recipe's) equals the official pipeline
given the same random draws. The official numbers are data (tests/training/data/official_augment.json):
github dohun-mat/FeatherFace `data/data_augment.py` `preproc(64, (104, 117, 123))` was run on the
images below with python's `random` replaced by a recorder, and its outputs hashed; here the recorded
draws are replayed through this project's augment()."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from featherface_tune.training.augment import augment

DATA = json.loads((Path(__file__).parent / "data" / "official_augment.json").read_text())


def image(h: int, w: int) -> np.ndarray:
    """A deterministic BGR test pattern with sharp edges (resampling differences show)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 7 + y * 3) % 256, (x * x + 5 * y) % 256, (x * y // 3 + 40) % 256], -1)
    return img.astype(np.uint8)


def targets() -> np.ndarray:
    rows = []
    for x1, y1, x2, y2 in ((10, 12, 40, 50), (60, 20, 85, 48), (30, 55, 52, 80)):
        pts: list[float] = []
        for fx, fy in ((0.3, 0.35), (0.7, 0.35), (0.5, 0.55), (0.35, 0.75), (0.65, 0.75)):
            pts += [x1 + fx * (x2 - x1), y1 + fy * (y2 - y1)]
        rows.append([x1, y1, x2, y2, *pts, 1.0])
    return np.array(rows, dtype=np.float32)


class Replay:
    """A numpy Generator stand-in that returns the recorded draws in order (the official code's
    `random.choice` was recorded as the chosen index, as `integers(len(seq))` draws it here)."""

    def __init__(self, draws: list[float]):
        self.draws = list(draws)

    def _next(self) -> float:
        assert self.draws, "the project drew more values than the official code"
        return self.draws.pop(0)

    def integers(self, *args: int) -> int:
        return int(self._next())

    def uniform(self, low: float, high: float) -> float:
        return float(self._next())


@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: f"seed{c['seed']}")
def test_opencv_augmentation_equals_the_official_preproc(case: dict) -> None:
    rng = Replay(case["draws"])
    out, t = augment(image(case["height"], case["width"]), targets(), 64, rng, image_ops="opencv")  # type: ignore[arg-type]
    assert not rng.draws, "the project drew fewer values than the official code"
    got = np.ascontiguousarray(out, dtype=np.float32)
    assert float(got.astype(np.float64).sum()) == case["image_sum"]
    assert hashlib.sha256(got.tobytes()).hexdigest() == case["image_sha256"]
    assert t.tolist() == case["targets"]


def test_pillow_augmentation_is_not_the_official_one() -> None:
    """The comparison can fail: the short recipe's Pillow pipeline differs on the same draws."""
    differs = 0
    for case in DATA["cases"]:
        out, _ = augment(image(case["height"], case["width"]), targets(), 64, Replay(case["draws"]),  # type: ignore[arg-type]
                         image_ops="pillow")
        differs += hashlib.sha256(np.ascontiguousarray(out, np.float32).tobytes()).hexdigest() != case["image_sha256"]
    assert differs >= len(DATA["cases"]) // 2
