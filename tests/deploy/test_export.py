"""ONNX export: DeformConv, dynamic batch and any height and width >= 32 (odd ones included), onnxruntime
equal to PyTorch within the stated tolerance, metadata, post-processing in the graph, the CLI's failure
when the tolerance is exceeded; and the trained checkpoint exported finds the astronaut's face as the
PyTorch model does, through `detect --checkpoint model.onnx` and `predict --checkpoint model.onnx`
(same JSON, same files).

An export takes 10-25 s on one core, so this file makes two: the official architecture once for every
test of it (`exported`), the smallest preset once for the post-processed graph and the CLI's failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("onnx")

from featherface_tune.cli import app  # noqa: E402
from featherface_tune.deploy.export import META_CONFIG, META_CONVENTION, TOLERANCE, export_onnx, verify  # noqa: E402
from featherface_tune.deploy.runtime import OnnxModel  # noqa: E402
from featherface_tune.models.builder import build_model  # noqa: E402
from featherface_tune.models.checkpoint import load_model  # noqa: E402
from featherface_tune.models.presets import get_preset  # noqa: E402

pytestmark = pytest.mark.slow

SIZES = ((2, 64, 96), (1, 37, 53), (1, 32, 32), (1, 131, 100))  # the `export` command verifies at these
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REIMPL = SHARED / "weights" / "featherface-reimpl-489015.pth"
REFERENCE_BOX = np.array([180.0, 60.0, 271.0, 178.0])  # reference implementation: score 0.9996


def _model(name: str, seed: int = 0):  # type: ignore[no-untyped-def]
    """Random weights, with the deformable convs' offsets and modulators made non-zero (a fresh layer
    has zero offsets: a plain conv would then pass for a deformable one) and BN statistics moved."""
    torch.manual_seed(seed)
    model = build_model(get_preset(name)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.named_parameters():
            if "offset_conv" in k:
                v.copy_(torch.randn(v.shape, generator=g) * (0.02 if k.endswith("weight") else 1.5))
            elif "modulator_conv" in k:
                v.copy_(torch.randn(v.shape, generator=g) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):  # type: ignore[no-untyped-def]
    """(PyTorch model, ONNX file, the export's JSON report) of the official architecture, exported once.

    Where ../shared holds the trained reimplementation (CI does), it is that checkpoint through
    `export --checkpoint --json`, which the astronaut tests below need: its deformable offsets are
    trained (0.5 px on average, up to 3) and its BatchNorm statistics real, what `_model` makes up
    for random weights. Elsewhere, `_model`'s random weights through `export_onnx`."""
    path = tmp_path_factory.mktemp("onnx") / "official.onnx"
    if not REIMPL.exists():
        model = _model("featherface-official")
        return model, path, export_onnx(model, model.config, path, sizes=SIZES).to_json()
    r = CliRunner().invoke(app, ["export", "--checkpoint", str(REIMPL), "--out", str(path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["config_inferred"]
    model, _, _ = load_model(REIMPL)
    return model, path, report


def test_export_matches_pytorch_at_odd_sizes(exported) -> None:  # type: ignore[no-untyped-def]
    model, path, report = exported
    assert report["verified"], report["checks"]
    assert [tuple(c["input"][:1] + c["input"][2:]) for c in report["checks"]] == list(SIZES)
    for c in report["checks"]:
        assert c["max_abs_diff"] <= TOLERANCE * (1 + c["max_abs_output"])
    # a size that was not verified during export, batch 3, odd both ways
    onnx_model = OnnxModel.load(path)
    x = torch.randn(3, 3, 45, 77) * 60
    with torch.no_grad():
        want = model(x)
    got = onnx_model.run_raw(x.numpy())
    for name, ref in zip(("boxes", "logits", "landmarks"), want):
        assert got[name].shape == tuple(ref.shape)
        assert np.abs(got[name] - ref.numpy()).max() <= TOLERANCE * (1 + ref.abs().max().item())


def test_graph_has_deformconv_dynamic_axes_and_metadata(exported) -> None:  # type: ignore[no-untyped-def]
    import onnx

    model, path, _ = exported
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("DeformConv") == 15  # 3 SSH x 5 deformable convs
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 19
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert len(dims) == 4 and dims[1].dim_value == 3
    assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3]))  # batch, H, W dynamic
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[META_CONFIG]) == model.config.to_dict()
    conv = json.loads(meta[META_CONVENTION])
    assert conv["means_bgr"] == [104.0, 117.0, 123.0] and conv["variances"] == [0.1, 0.2]
    assert OnnxModel.load(path).config == model.config


def test_verification_can_fail(exported) -> None:  # type: ignore[no-untyped-def]
    model, path, _ = exported
    assert not any(c["ok"] for c in verify(path, model, SIZES[:2], tolerance=1e-12))
    other = _model("featherface-official", seed=5)  # different weights: far outside the tolerance
    assert not any(c["ok"] for c in verify(path, other, SIZES[:1]))


def test_postprocessed_graph_matches_pytorch_and_the_cli_exits_1_past_the_tolerance(tmp_path: Path) -> None:
    # the smallest preset: decoding and NMS in the graph do not depend on the network (each export of a
    # DCN/BiFPN model takes about three times as long; `exported` covers those). One export through
    # the CLI, with a tolerance no export meets: it exits 1 and still writes the file, which is then
    # checked against PyTorch at the default tolerance
    model = _model("retinaface-mnet025", seed=1)
    weights = tmp_path / "mnet.pt"
    torch.save(model.state_dict(), weights)
    path = tmp_path / "pp.onnx"
    r = CliRunner().invoke(app, ["export", "--preset", "retinaface-mnet025", "--checkpoint", str(weights),
                                 "--out", str(path), "--with-postprocess", "--tolerance", "1e-15", "--json"])
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)
    assert data["verified"] is False and data["max_abs_diff"] > 1e-15 * 10 and data["postprocess"]
    assert "verification failed" in r.stderr and path.exists()
    checks = verify(path, model, SIZES[1:])  # what export_onnx(..., sizes=SIZES[1:]) reports
    assert all(c["ok"] for c in checks), checks
    for c in checks:
        det = c["detections"]
        assert det["onnx"] > 0 and det["paired"] * 2 >= det["total"] * 0.98
    onnx_model = OnnxModel.load(path)
    assert onnx_model.postprocess
    from featherface_tune.inference.detector import detect

    img = (np.random.default_rng(0).random((41, 67, 3)) * 255).astype(np.uint8)
    want = detect(model, img, conf=0.3)
    got = detect(onnx_model, img, conf=0.3)  # thresholds are graph inputs
    assert len(got) == len(want) and len(want) > 0
    assert np.abs(got.boxes - want.boxes).max() < 1e-3 and np.abs(got.scores - want.scores).max() < 1e-5
    assert got.image_size == want.image_size == (41, 67)


def test_threads_open_the_session_once(exported, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--threads on an ONNX checkpoint: the session opens once, with them (placing the model with the
    same threads reopens nothing; other threads reopen it)."""
    from featherface_tune.inference.model import open_model, place_model
    from featherface_tune.deploy import runtime

    _, path, _ = exported
    opened: list[int | None] = []
    real = runtime.open_session
    monkeypatch.setattr(runtime, "open_session", lambda m, threads=None, **kw: (opened.append(threads), real(m, threads, **kw))[1])
    model, _, _ = open_model(path, None, None, None, 2)
    place_model(model, "cpu", 2)
    assert opened == [2] and model.session.get_session_options().intra_op_num_threads == 2
    place_model(model, "cpu", 1)
    assert opened == [2, 1] and model.threads == 1


# ---- the trained checkpoint, exported, finds the astronaut ------------------------------------------


@pytest.fixture(scope="module")
def astronaut(exported, tmp_path_factory):  # type: ignore[no-untyped-def]
    """(folder, the astronaut image in a WIDERFace-like images/ tree, the exported trained checkpoint)."""
    if not REIMPL.exists():
        pytest.skip(f"{REIMPL} not present")
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("astro")
    img = d / "images" / "0--Parade" / "0_Parade_astronaut.png"
    img.parent.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(img)
    return d, img, exported[1]


def _detect(img: Path, checkpoint: Path) -> dict:
    r = CliRunner().invoke(app, ["detect", str(img), "--checkpoint", str(checkpoint), "--json", "--threshold", "0.02"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_detect_onnx_equals_pytorch(astronaut) -> None:  # type: ignore[no-untyped-def]
    _, img, onnx_path = astronaut
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


def test_predict_onnx_writes_the_same_files(astronaut) -> None:  # type: ignore[no-untyped-def]
    d, _, onnx_path = astronaut
    outs = {}
    for name, ck in (("onnx", onnx_path), ("torch", REIMPL)):
        r = CliRunner().invoke(app, ["predict", "--checkpoint", str(ck), "--images", str(d / "images"),
                                     "--out", str(d / name), "--json"])
        assert r.exit_code == 0, r.output
        outs[name] = (d / name / "0--Parade" / "0_Parade_astronaut.txt").read_text().splitlines()
    assert outs["onnx"][:2] == outs["torch"][:2]
    assert outs["onnx"][2].split()[:4] == outs["torch"][2].split()[:4]  # integer boxes of the face
