"""Damaged weights are named, not used: train's model.pt and an exported ONNX file carry a SHA-256 of
their weights, checked when read; a flipped byte inside a tensor is refused. Foreign checkpoints (no
digest) are checked for what is cheap: non-finite values, sparse or meta tensors. What is NOT detected:
a plausible change to a foreign checkpoint's finite values."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error
from featherface_tune.errors import InputError
from featherface_tune.models.checkpoint import DIGEST_KEY, read_checkpoint, weights_digest

CFG = {"neck_channels": 16, "ssh_channels": 16, "backbone_cbam": False, "neck_cbam": False}


def _flip_in_tensor_data(path: Path) -> None:
    """Flip one byte inside the largest tensor record of a torch zip file (not its metadata)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len  # the record's data, after its local header
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_model_pt_is_named(cli, tmp_path: Path):
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.config import FeatherFaceConfig
    from featherface_tune.training.loop import save_model

    path = tmp_path / "model.pt"
    save_model(path, build_model(FeatherFaceConfig(**CFG)), 64, 1)  # type: ignore[arg-type]
    assert read_checkpoint(path).state_dict  # intact: reads
    _flip_in_tensor_data(path)
    with pytest.raises(InputError, match="do not match the digest"):
        read_checkpoint(path)
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    assert_one_line_error(cli("detect", tmp_path / "x.png", "-m", path), 2, "digest")


def test_digest_covers_names_shapes_and_values():
    a = {"w": torch.zeros(4), "b": torch.ones(2)}
    d = weights_digest(a)
    assert d == weights_digest(dict(reversed(list(a.items()))))
    assert d != weights_digest({"w": torch.zeros(2, 2), "b": torch.ones(2)})
    assert d != weights_digest({"w": torch.zeros(4), "c": torch.ones(2)})
    b = {"w": torch.zeros(4), "b": torch.ones(2)}
    b["w"][1] = 1e-30
    assert d != weights_digest(b)


@pytest.mark.parametrize("kind,needle", [("sparse", "sparse_coo tensor"), ("meta", "meta tensor"), ("nan", "NaN")])
def test_foreign_checkpoints_with_unusable_tensors(tmp_path: Path, kind: str, needle: str):
    from featherface_tune import load_model
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.config import FeatherFaceConfig

    sd = build_model(FeatherFaceConfig(**CFG)).state_dict()  # type: ignore[arg-type]
    key = next(k for k in sd if k.endswith("weight"))
    if kind == "sparse":
        sd[key] = sd[key].reshape(sd[key].shape[0], -1).to_sparse()
    elif kind == "meta":
        sd[key] = torch.empty(sd[key].shape, device="meta")
    else:
        sd[key] = sd[key].clone().fill_(float("nan"))
    path = tmp_path / "foreign.pth"
    torch.save(sd, path)
    with pytest.raises(InputError, match=needle):
        load_model(path, FeatherFaceConfig(**CFG))  # type: ignore[arg-type]


def test_a_changed_onnx_initializer_is_named(tmp_path: Path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import numpy as np

    from featherface_tune.deploy.metadata import META_WEIGHTS, initializers_digest
    from featherface_tune.deploy.runtime import OnnxModel

    weights = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    path = tmp_path / "m.onnx"
    _tiny_onnx(path, {"boxes": weights, "logits": np.zeros((1, 4, 2), np.float32)}, {})
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_WEIGHTS, initializers_digest(proto)
    onnx.save(proto, str(path))
    assert OnnxModel.load(path).config is None  # intact: opens
    data = bytearray(path.read_bytes())
    data[data.index(weights.tobytes()) + 20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="do not match the digest"):
        OnnxModel.load(path)
    assert DIGEST_KEY == "weights_sha256"


def _tiny_onnx(path: Path, outputs: dict, meta: dict) -> None:  # type: ignore[type-arg]
    """A graph with one image input and constant outputs (name -> array), with metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, infos, inits = [], [], []
    for name, arr in outputs.items():
        inits.append(numpy_helper.from_array(arr, f"{name}_c"))
        nodes.append(helper.make_node("Identity", [f"{name}_c"], [name]))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         [1, 3, None, None])], infos, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    for k, v in meta.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(path))


@pytest.mark.parametrize("case", ["renamed", "anchors", "deep"])
def test_tampered_onnx_metadata_and_outputs_are_one_line(tmp_path: Path, case: str):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import json

    import numpy as np

    from featherface_tune.deploy.metadata import META_CONFIG
    from featherface_tune.deploy.runtime import OnnxModel
    from featherface_tune.models.priors import num_priors

    cells = num_priors(64, 64, 1)
    outs = {"boxes": np.zeros((1, cells * 2, 4), np.float32), "logits": np.zeros((1, cells * 2, 2), np.float32)}
    meta = {META_CONFIG: json.dumps({"anchors_per_cell": 7})}
    if case == "renamed":
        outs = {"b0xes": outs["boxes"], "logits": outs["logits"]}
    elif case == "deep":
        meta = {META_CONFIG: "[" * 100_000 + "]" * 100_000}
    path = tmp_path / "m.onnx"
    _tiny_onnx(path, outs, meta)
    needle = {"renamed": "outputs", "anchors": "anchors_per_cell=7", "deep": "stored config"}[case]
    with pytest.raises(InputError, match=needle):
        OnnxModel.load(path).detect(np.zeros((64, 64, 3), np.uint8))
