"""ONNX export of a FeatherFace model, verified against PyTorch in onnxruntime.

Route: `torch.export` with a dynamic batch, height and width, then the dynamo ONNX exporter with one
custom translation: `featherface_tune::deform_conv2d` becomes ONNX `DeformConv` (opset >= 19; the
offset layout, (dy, dx) per kernel position in row-major order, and the mask are the same). Two
export settings let any height and width >= 32 through, not only multiples of 32:

* `backed_size_oblivious`: broadcasting checks do not guard on a size being 1 (P5 is 1x1 for inputs
  up to 32 pixels), so the graph is not specialised to larger inputs;
* `prefer_deferred_runtime_asserts_over_guards`: what the exporter cannot prove about the size
  arithmetic becomes a runtime check instead of a failure.

The model itself writes its shape arithmetic so that the exporter can follow it (BiFPN same padding
without `ceil`, the downsampling pool padded to the next level's size, CBAM's global pooling as a
reduction); its outputs are unchanged (tests/inference).

Every export verifies itself: the saved file runs in onnxruntime on random image-like inputs of a few
sizes (odd ones included) and the largest difference from PyTorch must be within `tolerance` x (1 +
the largest PyTorch output magnitude).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from featherface_tune._version import __version__
from featherface_tune.extras import require
from featherface_tune.atomic import atomic_write, check_replaceable
from featherface_tune.deploy.metadata import (
    META_CONFIG, META_CONVENTION, META_POSTPROCESS, META_VERSION, META_WEIGHTS, initializers_digest,
)
from featherface_tune.errors import InputError
from featherface_tune.models.config import FeatherFaceConfig

MIN_OPSET = 19
MIN_SIZE = 32
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "logits", "landmarks")  # raw head outputs (before decoding)
# (batch, height, width) of the random verification inputs: even, odd and the 32-pixel minimum
VERIFY_SIZES: tuple[tuple[int, int, int], ...] = ((2, 64, 96), (1, 37, 53), (1, 32, 32), (1, 131, 100))
TOLERANCE = 1e-4
PP_UNPAIRED = 0.02  # post-processing check: share of detections left unpaired by NMS decisions on ties


def convention(cfg: FeatherFaceConfig, postprocess: bool) -> dict[str, Any]:
    """What the graph expects and returns, stored in the file's metadata."""
    from featherface_tune.data.images import MEANS_BGR
    from featherface_tune.inference.decode import VARIANCES
    from featherface_tune.models.priors import STEPS, min_sizes

    d: dict[str, Any] = {
        "input": f"{INPUT_NAME}: float32 [batch, 3, height, width], BGR minus means {list(MEANS_BGR)}, "
                 f"no scaling; any height and width >= {MIN_SIZE}",
        "means_bgr": list(MEANS_BGR),
        "priors": {"steps": list(STEPS), "min_sizes": [list(s) for s in min_sizes(cfg.anchors_per_cell)],
                   "anchors_per_cell": cfg.anchors_per_cell, "order": "level, row-major cell, anchor"},
        "variances": list(VARIANCES),
    }
    if postprocess:
        from featherface_tune.deploy.postprocess import describe

        d.update(describe())
    else:
        d["outputs"] = {"boxes": "[batch, priors, 4] box regression", "logits": "[batch, priors, 2] class logits",
                        "landmarks": "[batch, priors, 10] landmark regression (only with landmarks)"}
    return d


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how well onnxruntime matched PyTorch."""

    path: str
    opset: int
    postprocess: bool
    config: dict[str, Any]
    bytes: int
    seconds: float
    tolerance: float
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c["max_abs_diff"] for c in self.checks), default=0.0)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: a difference that is not finite (outputs of another shape) is null."""
        def finite(v: Any) -> Any:
            return v if not isinstance(v, float) or math.isfinite(v) else None

        checks = [{k: finite(v) for k, v in c.items()} for c in self.checks]
        return {"path": self.path, "opset": self.opset, "postprocess": self.postprocess, "bytes": self.bytes,
                "seconds": round(self.seconds, 2), "tolerance": self.tolerance,
                "max_abs_diff": finite(self.max_abs_diff), "verified": self.ok, "checks": checks,
                "config": self.config}


def _deform_translation() -> dict[Any, Any]:
    """featherface_tune::deform_conv2d -> ONNX DeformConv (traced onnxscript function)."""
    from onnxscript import opset19 as op

    def deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation):  # type: ignore[no-untyped-def]
        return op.DeformConv(x, weight, offset, bias, mask, strides=list(stride), pads=list(padding) * 2,
                             dilations=list(dilation))

    import featherface_tune.models.blocks.deform  # noqa: F401  (registers the op)

    return {torch.ops.featherface_tune.deform_conv2d.default: deform_conv2d}


def max_opset() -> int:
    """The newest opset both the installed torch exporter and onnx know."""
    import onnx

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as torch_max
    except ImportError:  # pragma: no cover - torch moved it; onnx's limit alone
        torch_max = onnx.defs.onnx_opset_version()
    return min(int(torch_max), onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """`opset` in MIN_OPSET..max_opset(): a file with an opset no runtime knows is never written."""
    if opset < MIN_OPSET:
        raise InputError(field="opset", value=opset, rule=f"must be at least {MIN_OPSET} (ONNX DeformConv)")
    require("onnx", "ONNX export")
    if opset > (top := max_opset()):
        raise InputError(field="opset", value=opset, rule=f"must be at most {top}, the newest opset the installed "
                         "torch exporter and onnx support")


def trace(model: nn.Module, opset: int = MIN_OPSET, dynamic: bool = True,
          example: torch.Tensor | None = None) -> Any:
    """The model as an ONNX ModelProto: dynamic batch, height and width (or the example's static
    shape with dynamic=False, used for latency)."""
    require("onnxscript", "ONNX export")
    require("onnx", "ONNX export")
    import torch.fx.experimental._config as fx_config

    check_opset(opset)
    model = model.eval()
    x = example if example is not None else torch.randn(2, 3, 64, 96) * 60
    dims = None
    if dynamic:
        d = torch.export.Dim.DYNAMIC
        dims = ({0: d, 2: d, 3: d},)
    landmarks = bool(getattr(getattr(model, "config", None), "landmarks", True))
    names = list(OUTPUT_NAMES if landmarks else OUTPUT_NAMES[:2])
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" notes: not the user's concern
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), fx_config.patch(backed_size_oblivious=True), warnings.catch_warnings():  # type: ignore[attr-defined]
            warnings.simplefilter("ignore")
            program = torch.export.export(model, (x,), dynamic_shapes=dims, strict=False,
                                          prefer_deferred_runtime_asserts_over_guards=True)
            onnx_program = torch.onnx.export(program, (x,), dynamo=True, opset_version=opset, verbose=False,
                                             input_names=[INPUT_NAME], output_names=names,
                                             custom_translation_table=_deform_translation(), optimize=True)
    finally:
        quiet.setLevel(level)
    if onnx_program is None:  # pragma: no cover - torch returns None only when asked to write a file itself
        raise RuntimeError("torch.onnx.export returned no program")
    return onnx_program.model_proto


def _set_metadata(proto: Any, cfg: FeatherFaceConfig, postprocess: bool) -> None:
    meta = {META_CONFIG: json.dumps(cfg.to_dict()), META_CONVENTION: json.dumps(convention(cfg, postprocess)),
            META_POSTPROCESS: "nms" if postprocess else "none", META_VERSION: __version__,
            META_WEIGHTS: initializers_digest(proto)}
    keep = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "featherface-tune"
    proto.producer_version = __version__


def check_writable(out: Path) -> None:
    """Fail early (before a minute of tracing) when `out` cannot be written."""
    out = Path(out)
    if out.is_dir():
        raise InputError(field="out", value=out, rule="is a directory; give a file name such as model.onnx")
    check_replaceable(out, field="out")  # a device, FIFO or symbolic link is never replaced by a file
    parent = out.resolve().parent
    if not parent.is_dir():
        raise InputError(field="out", value=out, rule=f"folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InputError(field="out", value=out, rule="not writable")


def _save(proto: Any, out: Path) -> int:
    """Write atomically (`atomic_write`): no half-written model, no temporary left on failure."""
    import onnx

    out = Path(out)
    atomic_write(out, lambda f: onnx.save(proto, f), field="out")
    return out.stat().st_size


def verify(path: Path, model: nn.Module, sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES,
           tolerance: float = TOLERANCE, seed: int = 0) -> list[dict[str, Any]]:
    """onnxruntime vs PyTorch on random image-like inputs (normal, std 60: the scale of BGR minus
    means). One row per size: the largest absolute difference over the head outputs, and for a
    post-processed graph its detections vs PyTorch's post-processing of the same head outputs."""
    from featherface_tune.deploy.runtime import OnnxModel

    onnx_model = OnnxModel.load(path)
    g = torch.Generator().manual_seed(seed)
    rows = []
    model = model.eval()
    prefix = onnx_model.raw_prefix
    for b, h, w in sizes:
        x = torch.randn(b, 3, h, w, generator=g) * 60
        with torch.no_grad():
            boxes, logits, ldm = model(x)
        want = {"boxes": boxes.numpy(), "logits": logits.numpy()}
        if ldm is not None:
            want["landmarks"] = ldm.numpy()
        got = onnx_model.run_raw(x.numpy())
        diff, scale, mismatch = 0.0, 0.0, []
        for name, r in want.items():
            a = np.asarray(got[prefix + name], dtype=np.float64)
            if a.shape != r.shape:
                mismatch.append(f"{name}: ONNX {list(a.shape)} vs PyTorch {list(r.shape)}")
                continue
            diff = max(diff, float(np.abs(a - r).max()))
            scale = max(scale, float(np.abs(r).max()))
        limit = tolerance * (1.0 + scale)
        row: dict[str, Any] = {"input": [b, 3, h, w], "max_abs_diff": diff if not mismatch else math.inf,
                               "max_abs_output": scale, "limit": limit, "ok": bool(diff <= limit and not mismatch)}
        if mismatch:
            row["shape_mismatch"] = mismatch
        if onnx_model.postprocess:
            from featherface_tune.deploy.postprocess import match, reference

            raw = {name: got[prefix + name] for name in want}
            det = match(got, reference(raw, h, w, onnx_model.config))
            det["ok"] = bool(det["max_abs_diff"] <= tolerance * (1.0 + max(h, w))
                             and det["unpaired"] <= max(2, PP_UNPAIRED * det["total"]))
            row["detections"] = det
            row["ok"] = row["ok"] and det["ok"]
        rows.append(row)
    return rows


def export_onnx(model: nn.Module, cfg: FeatherFaceConfig, out: Path, opset: int = MIN_OPSET,
                with_postprocess: bool = False, sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES,
                tolerance: float = TOLERANCE) -> ExportReport:
    """Export, store config and convention in the metadata, save, and verify in onnxruntime.

    The report says whether every verification size is within tolerance; the caller decides what
    a failure means (the `export` command exits 1).
    """
    import time

    require("onnxruntime", "ONNX export (its verification)")
    check_writable(out)
    for b, h, w in sizes:
        if h < MIN_SIZE or w < MIN_SIZE or b < 1:
            raise InputError(f"verification size {b}x{h}x{w}: height and width must be >= {MIN_SIZE}")
    t0 = time.perf_counter()
    model = model.eval()
    proto = trace(model, opset)
    if with_postprocess:
        from featherface_tune.deploy.postprocess import append_postprocess

        proto = append_postprocess(proto, cfg)
    _set_metadata(proto, cfg, with_postprocess)
    import onnx

    onnx.checker.check_model(proto)
    size = _save(proto, out)
    checks = verify(out, model, sizes, tolerance)
    return ExportReport(str(out), opset, with_postprocess, cfg.to_dict(), size, time.perf_counter() - t0,
                        tolerance, checks)
