"""Error paths of export, ONNX inference and ORT latency: each a one-line error and a non-zero exit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def _one_line_error(r, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


@pytest.fixture
def no_onnxruntime(monkeypatch):  # type: ignore[no-untyped-def]
    """The deploy extra missing: importing onnxruntime raises ImportError."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


def test_export_without_the_extra_names_it(no_onnxruntime, tmp_path: Path) -> None:
    line = _one_line_error(_run("export", "--preset", "retinaface-mnet025", "--out", str(tmp_path / "m.onnx")), 1)
    assert line.endswith("export needs onnxruntime: pip install 'featherface-tune[deploy]'"), line
    assert not (tmp_path / "m.onnx").exists()


def test_detect_onnx_without_the_extra_names_it(no_onnxruntime, tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(img)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used")
    line = _one_line_error(_run("detect", str(img), "--checkpoint", str(model)), 1)
    assert "featherface-tune[deploy]" in line


def test_latency_runtime_without_the_extra(no_onnxruntime) -> None:
    from featherface_tune.deploy.latency import check_runtime, default_runtime
    from featherface_tune.extras import MissingExtra

    assert default_runtime() == "torch"  # every other path keeps working
    with pytest.raises(MissingExtra, match=r"featherface-tune\[deploy\]"):
        check_runtime("onnxruntime")
    line = _one_line_error(_run("search", "--target", "489000", "--objective", "latency", "--latency-mode", "sampled", "--runtime",
                                "onnxruntime", "--trials", "1"), 1)
    assert "featherface-tune[deploy]" in line


def test_unknown_runtime() -> None:
    from featherface_tune.deploy.latency import check_runtime
    from featherface_tune.errors import InputError

    with pytest.raises(InputError, match="^runtime='tflite': use onnxruntime or torch$"):  # the API's field
        check_runtime("tflite")
    line = _one_line_error(_run("latency", "--preset", "retinaface-mnet025", "--runtime", "tflite"))
    assert line == "error: --runtime 'tflite': use onnxruntime or torch"  # the command's flag


def test_garbage_onnx_file_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(img)
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf model" * 10)
    line = _one_line_error(_run("detect", str(img), "--checkpoint", str(bad), "--json"))
    assert "garbage.onnx" in line and "onnxruntime cannot load it" in line
    images = tmp_path / "images" / "0--Parade"
    images.mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(images / "x.png")
    line = _one_line_error(_run("predict", "--checkpoint", str(bad), "--images", str(tmp_path / "images"),
                                "--out", str(tmp_path / "pred")))
    assert "onnxruntime cannot load it" in line
    line = _one_line_error(_run("detect", str(img), "--checkpoint", str(tmp_path / "absent.onnx")))
    assert "absent.onnx" in line


def test_onnx_checkpoint_refuses_config_options(tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(img)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    line = _one_line_error(_run("detect", str(img), "--checkpoint", str(model), "--preset", "featherface-official"))
    assert "--preset/--config/--set do not apply" in line


def test_unwritable_out_fails_before_exporting(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    line = _one_line_error(_run("export", "--preset", "retinaface-mnet025", "--out",
                                str(tmp_path / "missing" / "m.onnx")))
    assert "does not exist" in line
    line = _one_line_error(_run("export", "--preset", "retinaface-mnet025", "--out", str(tmp_path)))
    assert "is a directory" in line


def test_bad_opset_and_missing_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    line = _one_line_error(_run("export", "--preset", "retinaface-mnet025", "--opset", "17", "--out",
                                str(tmp_path / "m.onnx")))
    assert "--opset 17" in line and "19" in line
    line = _one_line_error(_run("export", "--out", str(tmp_path / "m.onnx")))
    assert "--preset" in line
    assert not (tmp_path / "m.onnx").exists()


def test_exporting_an_onnx_file_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the suffix decides")
    line = _one_line_error(_run("export", "--checkpoint", str(model), "--out", str(tmp_path / "again.onnx")))
    assert "already an ONNX model" in line
