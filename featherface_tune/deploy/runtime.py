"""Run an exported FeatherFace ONNX file in onnxruntime, with the same pre- and post-processing as
the PyTorch path (`featherface_tune.inference.detector`), so both give the same detections."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featherface_tune.extras import require
from featherface_tune.deploy.metadata import META_CONFIG, META_POSTPROCESS, META_WEIGHTS, initializers_digest
from featherface_tune.errors import InputError, first_line
from featherface_tune.models.config import FeatherFaceConfig

ONNX_SUFFIXES = (".onnx",)


def _check_weights(path: Path, stored: str) -> None:
    """The digest of the file's initializers against the one written at export: changed bytes in the
    weights are named, not used (without onnx installed the check is skipped: onnxruntime runs alone)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - runtime-only installs
        return
    try:
        actual = initializers_digest(onnx.load(str(path)))
    except Exception as exc:  # noqa: BLE001 - a damaged protobuf is an input problem
        raise InputError(field="checkpoint", value=path, rule=f"cannot read its weights: {first_line(exc)}") from None
    if actual != stored:
        raise InputError(field="checkpoint", value=path, rule="its weights do not match the digest stored at export "
                         "(bytes of the file changed: a damaged copy or an edit); refusing to use them")


def is_onnx_file(path: Path) -> bool:
    return Path(path).suffix.lower() in ONNX_SUFFIXES


def session_options(threads: int | None = None) -> Any:
    """onnxruntime session options: all graph optimisations, `threads` intra-op threads (None: ORT's
    default), one inter-op thread (the graph is a chain)."""
    ort = require("onnxruntime", "running an ONNX model")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: shape-inference warnings are not the user's business
    return so


def open_session(model: str | bytes | Path, threads: int | None = None, what: str = "model",
                 field: str | None = None) -> Any:
    """An onnxruntime CPU session, or a one-line InputError when the file is not a loadable model:
    carrying `field`, the argument that gave its path (e.g. "checkpoint"), or naming the model `what`."""
    ort = require("onnxruntime", "running an ONNX model")
    try:
        src = str(model) if isinstance(model, Path) else model
        return ort.InferenceSession(src, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        from featherface_tune.errors import first_line

        rule = f"onnxruntime cannot load it: {first_line(exc, 200)}"
        if field is not None:
            raise InputError(field=field, value=model, rule=rule) from None
        raise InputError(f"{what}: {rule}") from None


@dataclass
class OnnxModel:
    """An exported model: its session, the config and post-processing flag read from its metadata."""

    path: str
    session: Any
    config: FeatherFaceConfig | None
    postprocess: bool
    metadata: dict[str, str]
    threads: int | None = None  # the session's intra-op threads (None: onnxruntime's default)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> "OnnxModel":
        p = Path(path)
        if not p.is_file():
            raise InputError(field="checkpoint", value=p, rule="no such file")
        sess = open_session(p, threads, field="checkpoint")
        meta = dict(sess.get_modelmeta().custom_metadata_map)

        if META_WEIGHTS in meta:
            _check_weights(p, meta[META_WEIGHTS])
        cfg = None
        if META_CONFIG in meta:
            from featherface_tune.models.config import from_mapping

            try:
                stored = json.loads(meta[META_CONFIG])
                if not isinstance(stored, dict):
                    raise TypeError(f"a {type(stored).__name__}, not a table of config fields")
                cfg = from_mapping(stored)
            except (ValueError, TypeError, RecursionError) as exc:
                raise InputError(field="checkpoint", value=p, rule=f"its stored config is invalid: "
                                 f"{first_line(exc) if not isinstance(exc, RecursionError) else 'nested too deeply'}"
                                 ) from None
        names = [i.name for i in sess.get_inputs()]
        if not names:
            raise InputError(field="checkpoint", value=p, rule="the graph has no input")
        outputs = {o.name for o in sess.get_outputs()}
        needed = {"boxes", "scores"} if meta.get(META_POSTPROCESS) == "nms" else {"boxes", "logits"}
        if not needed <= outputs:  # renamed or missing outputs: not a model this tool exported
            raise InputError(field="checkpoint", value=p, rule=f"the graph's outputs are {sorted(outputs)}, not the "
                             f"{sorted(needed)} an exported FeatherFace has")
        return cls(str(p), sess, cfg, meta.get(META_POSTPROCESS) == "nms", meta, threads)

    def set_threads(self, threads: int | None) -> None:
        """Reopen the session with `threads` intra-op threads (nothing to do when it has them)."""
        if threads == self.threads:
            return
        self.session = open_session(Path(self.path), threads, field="checkpoint")
        self.threads = threads

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def run_raw(self, x: np.ndarray, **extra: Any) -> dict[str, np.ndarray]:
        """All graph outputs by name for a [B, 3, H, W] float32 batch."""
        feeds = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        feeds.update({k: np.asarray(v) for k, v in extra.items()})
        names = [o.name for o in self.session.get_outputs()]
        try:
            outs = self.session.run(names, feeds)
        except Exception as exc:
            from featherface_tune.errors import first_line

            raise InputError(f"{self.path}: onnxruntime failed on a {'x'.join(map(str, x.shape))} input: "
                             f"{first_line(exc, 200)}") from None
        return dict(zip(names, outs))

    @property
    def raw_prefix(self) -> str:
        """Name prefix of the head outputs: "raw_" in a post-processed graph."""
        return "raw_" if self.postprocess else ""

    def anchors_per_cell(self, logits: np.ndarray, h: int, w: int) -> int:
        from featherface_tune.models.priors import num_priors

        cells = num_priors(h, w, 1)
        if self.config is not None:
            # the stored config must describe the graph (tampered metadata: anchors_per_cell=7)
            if logits.ndim != 3 or logits.shape[1] != cells * self.config.anchors_per_cell:
                raise InputError(field="checkpoint", value=self.path, rule=(
                    f"its stored config says anchors_per_cell={self.config.anchors_per_cell}, but the graph gives "
                    f"{logits.shape[1]:,} anchors for {cells:,} cells; the metadata does not match the model"))
            return self.config.anchors_per_cell
        if logits.ndim != 3 or cells == 0 or logits.shape[1] % cells:
            raise InputError(field="checkpoint", value=self.path, rule=(
                f"the graph's logits {tuple(logits.shape)} do not match the {cells:,} prior cells of a {h}x{w} input"))
        return int(logits.shape[1] // cells)

    def detect(self, image_bgr: np.ndarray, conf: float = 0.02, nms_iou: float = 0.4, top_k: int | None = None,
               keep: int | None = None, nms_backend: str = "plain") -> Any:
        """Faces in one BGR image at its size: the PyTorch path's `Detections`."""
        from featherface_tune.inference.detector import Detections, postprocess, preprocess

        x = preprocess(image_bgr)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if self.postprocess:
            from featherface_tune.deploy.postprocess import thresholds

            o = self.run_raw(x.numpy(), **thresholds(conf, nms_iou, top_k, keep))
            ldm = o.get("landmarks")
            return Detections(o["boxes"].astype(np.float32), o["scores"].astype(np.float32),
                              None if ldm is None else ldm.astype(np.float32), (h, w))
        o = self.run_raw(x.numpy())
        ldm = o.get("landmarks")
        return postprocess(torch.from_numpy(o["boxes"][0]), torch.from_numpy(o["logits"][0]),
                           None if ldm is None else torch.from_numpy(ldm[0]), (h, w),
                           self.anchors_per_cell(o["logits"], h, w), conf, nms_iou, top_k, keep, nms_backend)
