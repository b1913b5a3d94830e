"""ONNX export: DeformConv, dynamic batch and any height and width >= 32 (odd ones included), onnxruntime
equal to PyTorch within the stated tolerance, metadata, post-processing in the graph, the CLI's failure
when the tolerance is exceeded."""

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
from featherface_tune.models.presets import get_preset  # noqa: E402

pytestmark = pytest.mark.slow

SIZES = ((2, 64, 96), (1, 37, 53), (1, 32, 32), (1, 131, 100))


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
    model = _model("featherface-official")
    path = tmp_path_factory.mktemp("onnx") / "official.onnx"
    report = export_onnx(model, model.config, path, sizes=SIZES)
    return model, path, report


def test_export_matches_pytorch_at_odd_sizes(exported) -> None:  # type: ignore[no-untyped-def]
    model, path, report = exported
    assert report.ok, report.checks
    assert [tuple(c["input"][:1] + c["input"][2:]) for c in report.checks] == list(SIZES)
    for c in report.checks:
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


def test_postprocessed_graph_matches_pytorch_detection(tmp_path: Path) -> None:
    # the smallest preset: decoding and NMS in the graph do not depend on the network (each export of a
    # DCN/BiFPN model takes about three times as long; `exported` covers those)
    model = _model("retinaface-mnet025", seed=1)
    path = tmp_path / "pp.onnx"
    report = export_onnx(model, model.config, path, with_postprocess=True, sizes=SIZES[1:])
    assert report.ok, report.checks
    for c in report.checks:
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


def test_cli_exits_1_when_the_tolerance_is_exceeded(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(app, ["export", "--preset", "retinaface-mnet025", "--out", str(out),
                                 "--tolerance", "1e-15", "--json"])
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)
    assert data["verified"] is False and data["max_abs_diff"] > 1e-15 * 10
    assert "verification failed" in r.stderr and out.exists()


def test_threads_open_the_session_once(exported, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--threads on an ONNX checkpoint: the session opens once, with them (placing the model with the
    same threads reopens nothing; other threads reopen it)."""
    from featherface_tune.inference.model import open_model, place_model
    from featherface_tune.deploy import runtime

    _, path, _ = exported
    opened: list[int | None] = []
    real = runtime.open_session
    monkeypatch.setattr(runtime, "open_session", lambda m, threads=None, what="model": (opened.append(threads), real(m, threads, what))[1])
    model, _, _ = open_model(path, None, None, None, 2)
    place_model(model, "cpu", 2)
    assert opened == [2] and model.session.get_session_options().intra_op_num_threads == 2
    place_model(model, "cpu", 1)
    assert opened == [2, 1] and model.threads == 1
