"""The trained checkpoint exported to ONNX finds the astronaut's face as the PyTorch model does, through
`detect --checkpoint model.onnx` and `predict --checkpoint model.onnx` (same JSON, same files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from featherface_tune.cli import app  # noqa: E402

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REIMPL = SHARED / "weights" / "featherface-reimpl-489015.pth"
REFERENCE_BOX = np.array([180.0, 60.0, 271.0, 178.0])  # reference implementation: score 0.9996


@pytest.fixture(scope="module")
def files(tmp_path_factory):  # type: ignore[no-untyped-def]
    if not REIMPL.exists():
        pytest.skip(f"{REIMPL} not present")
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("astro")
    img = d / "images" / "0--Parade" / "0_Parade_astronaut.png"
    img.parent.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(img)
    onnx_path = d / "reimpl.onnx"
    r = CliRunner().invoke(app, ["export", "--checkpoint", str(REIMPL), "--out", str(onnx_path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["verified"] and report["config_inferred"]
    assert report["max_abs_diff"] < 1e-4 * (1 + max(c["max_abs_output"] for c in report["checks"]))
    return d, img, onnx_path


def _detect(img: Path, checkpoint: Path) -> dict:
    r = CliRunner().invoke(app, ["detect", str(img), "--checkpoint", str(checkpoint), "--json", "--threshold", "0.02"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_detect_onnx_equals_pytorch(files) -> None:  # type: ignore[no-untyped-def]
    _, img, onnx_path = files
    got, want = _detect(img, onnx_path), _detect(img, REIMPL)
    assert set(got) == set(want)
    assert (got["height"], got["width"]) == (want["height"], want["width"]) == (512, 512)
    g, w = got["detections"], want["detections"]
    assert len(g) == len(w) >= 1
    best = np.array(g[0]["box"])
    assert g[0]["score"] > 0.99 and np.abs(best - REFERENCE_BOX).max() < 4.0
    for a, b in zip(g, w):
        assert a.keys() == b.keys()
        assert np.abs(np.array(a["box"]) - np.array(b["box"])).max() <= 0.02  # JSON rounds to 0.01
        assert abs(a["score"] - b["score"]) < 1e-5
        assert np.abs(np.array(a["landmarks"]) - np.array(b["landmarks"])).max() <= 0.02


def test_predict_onnx_writes_the_same_files(files) -> None:  # type: ignore[no-untyped-def]
    d, _, onnx_path = files
    outs = {}
    for name, ck in (("onnx", onnx_path), ("torch", REIMPL)):
        r = CliRunner().invoke(app, ["predict", "--checkpoint", str(ck), "--images", str(d / "images"),
                                     "--out", str(d / name), "--json"])
        assert r.exit_code == 0, r.output
        outs[name] = (d / name / "0--Parade" / "0_Parade_astronaut.txt").read_text().splitlines()
    assert outs["onnx"][:2] == outs["torch"][:2]
    assert outs["onnx"][2].split()[:4] == outs["torch"][2].split()[:4]  # integer boxes of the face
