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
    from onnx import TensorProto, helper, numpy_helper

    from featherface_tune.deploy.export import META_WEIGHTS, initializers_digest
    from featherface_tune.deploy.runtime import OnnxModel

    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_WEIGHTS, initializers_digest(proto)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    assert OnnxModel.load(path).config is None  # intact: opens
    data = bytearray(path.read_bytes())
    at = data.index(np.arange(16, dtype=np.float32).tobytes()) + 20
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="do not match the digest"):
        OnnxModel.load(path)
    assert DIGEST_KEY == "weights_sha256"
