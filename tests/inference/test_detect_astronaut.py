"""End to end with a model trained on WIDERFace: the astronaut's face in scikit-image's astronaut()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REIMPL = SHARED / "weights" / "featherface-reimpl-489015.pth"
REFERENCE_BOX = np.array([180.0, 60.0, 271.0, 178.0])  # reference implementation: score 0.9996


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def weights() -> Path:
    if not REIMPL.exists():
        pytest.skip(f"{REIMPL} not present")
    return REIMPL


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="module")
def model(weights: Path):  # type: ignore[no-untyped-def]
    from featherface_tune.models.checkpoint import load_model

    m, cfg, inferred = load_model(weights)  # strict loading
    assert inferred and cfg.neck_channels == 56 and cfg.bifpn_repeats == 2
    return m


def _check_astronaut(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray | None) -> None:
    assert len(scores) >= 1
    assert scores[0] > 0.99, scores[:3]
    assert iou(boxes[0], REFERENCE_BOX) > 0.7, boxes[0]
    assert np.abs(boxes[0] - REFERENCE_BOX).max() < 4.0, boxes[0]  # within a few pixels
    assert (scores[1:] <= 0.5).all(), scores[:5]
    if landmarks is not None:  # five points inside the face box, eyes above the mouth
        pts = landmarks[0].reshape(5, 2)
        x1, y1, x2, y2 = boxes[0]
        assert ((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2)).all()
        assert pts[0, 0] < pts[1, 0] and max(pts[0, 1], pts[1, 1]) < min(pts[3, 1], pts[4, 1])


def test_astronaut_face_found(model, astronaut_bgr: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    from featherface_tune.inference.detector import detect

    dets = detect(model, astronaut_bgr)  # RetinaFace test settings
    _check_astronaut(dets.boxes, dets.scores, dets.landmarks)
    assert dets.image_size == (512, 512)


def test_detect_cli_json_and_save(weights: Path, astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "astronaut.png"
    Image.fromarray(astronaut_bgr[:, :, ::-1]).save(img)  # lossless: the same pixels
    out_png = tmp_path / "annotated.png"
    r = CliRunner().invoke(app, ["detect", str(img), "--checkpoint", str(weights), "--json",
                                 "--threshold", "0.02", "--save", str(out_png)])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert (js["height"], js["width"]) == (512, 512)
    d = js["detections"]
    _check_astronaut(np.array([x["box"] for x in d]), np.array([x["score"] for x in d]),
                     np.array([np.array(x["landmarks"]).flatten() for x in d]))
    with Image.open(out_png) as im:
        assert im.size == (512, 512)
        drawn = np.asarray(im.convert("RGB"))
    assert not np.array_equal(drawn, astronaut_bgr[:, :, ::-1])  # something was drawn


def test_predict_cli_writes_widerface_layout(weights: Path, astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    (images / "0--Parade").mkdir(parents=True)
    Image.fromarray(astronaut_bgr[:, :, ::-1]).save(images / "0--Parade" / "0_Parade_astronaut.png")
    out = tmp_path / "pred"
    r = CliRunner().invoke(app, ["predict", "--checkpoint", str(weights), "--preset",
                                 "featherface-reimpl-489015", "--images", str(images), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["images"] == 1 and not js["config_inferred"]
    lines = (out / "0--Parade" / "0_Parade_astronaut.txt").read_text().splitlines()
    assert lines[0] == "0_Parade_astronaut" and int(lines[1]) == len(lines) - 2 == js["detections"]
    x, y, w, h = (int(v) for v in lines[2].split()[:4])
    assert iou(np.array([x, y, x + w, y + h], float), REFERENCE_BOX) > 0.7
    assert float(lines[2].split()[4]) > 0.99
