"""Post-processing inside the ONNX graph (`export --with-postprocess`): priors for the input's size,
decoding, softmax, top-k and NMS, so a deployed model returns boxes, scores and landmarks.

It follows `featherface_tune.inference.detector.postprocess` (the RetinaFace test convention): the
priors of `models/priors.py` (per level, row-major cells, then anchors), variances (0.1, 0.2), scores
strictly above the confidence threshold, the `top_k` best (ties: lower index first) into NMS, NMS as
`py_cpu_nms` (inclusive pixel boxes: ONNX NonMaxSuppression gets x2 + 1 and y2 + 1, the same shift
`inference/nms.py` feeds torchvision; a box is suppressed when its IoU is strictly above the
threshold), the first `keep` survivors per image, best first.

The thresholds are graph inputs with defaults (initializers), so callers may leave them out:
`score_threshold` 0.02, `iou_threshold` 0.4, `top_k` 5000, `max_detections` 750. Outputs, all
images of the batch together: `boxes` [K, 4] (x1, y1, x2, y2 pixels), `scores` [K], `landmarks`
[K, 10] (with landmarks), `batch_index` [K] (int64, which image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from featherface_tune.models.config import FeatherFaceConfig

DEFAULTS = {"score_threshold": 0.02, "iou_threshold": 0.4, "top_k": 5000, "max_detections": 750}
OUTPUTS = ("boxes", "scores", "landmarks", "batch_index")


def describe() -> dict[str, Any]:
    return {"outputs": {"boxes": "[K, 4] x1 y1 x2 y2 pixels", "scores": "[K] face probability",
                        "landmarks": "[K, 10] x1 y1 .. x5 y5 pixels (only with landmarks)",
                        "batch_index": "[K] int64 image of the batch"},
            "postprocess_inputs": dict(DEFAULTS),
            "postprocess": "softmax, score > score_threshold, top_k, decode, NMS (py_cpu_nms, IoU > "
                           "iou_threshold suppresses), max_detections per image"}


NO_CAP = 2**31 - 1  # top_k / max_detections of "no cap" (the graph takes Min with the box count)


def thresholds(conf: float, nms_iou: float, top_k: int | None, keep: int | None) -> dict[str, np.ndarray]:
    """Feeds for the threshold inputs (None: no cap, the official test protocol)."""
    return {"score_threshold": np.array([conf], np.float32), "iou_threshold": np.array([nms_iou], np.float32),
            "top_k": np.array([NO_CAP if top_k is None else top_k], np.int64),
            "max_detections": np.array([NO_CAP if keep is None else keep], np.int64)}


class _Graph:
    """A few helpers to append nodes with unique names."""

    def __init__(self, graph: Any):
        self.g = graph
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"pp_{hint}_{self.n}"

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "c") -> str:
        from onnx import numpy_helper

        nm = self.name(hint)
        self.g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), nm))
        return nm

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs: Any) -> Any:
        from onnx import helper

        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.g.node.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs


def append_postprocess(proto: Any, cfg: FeatherFaceConfig) -> Any:
    """Return `proto` with the post-processing appended and its outputs replaced."""
    import onnx
    from onnx import TensorProto, helper

    from featherface_tune.inference.decode import VARIANCES
    from featherface_tune.models.priors import STEPS, min_sizes

    g = _Graph(proto.graph)
    image = proto.graph.input[0].name
    raw = {o.name: "raw_" + o.name for o in proto.graph.output}  # the head outputs keep flowing, renamed
    for node in proto.graph.node:
        node.input[:] = [raw.get(t, t) for t in node.input]
        node.output[:] = [raw.get(t, t) for t in node.output]
    loc, logits, ldm = raw["boxes"], raw["logits"], raw.get("landmarks")
    for nm, v in DEFAULTS.items():  # inputs with defaults: an initializer of the same name
        dt = np.float32 if isinstance(v, float) else np.int64
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array([v], dt), nm))
        proto.graph.input.append(helper.make_tensor_value_info(
            nm, TensorProto.FLOAT if dt is np.float32 else TensorProto.INT64, [1]))

    shape = g.op("Shape", [image])
    hw_i = g.op("Slice", [shape, g.const([2], np.int64), g.const([4], np.int64)], "hw")  # [H, W] int64
    hw = g.op("Cast", [hw_i], to=TensorProto.FLOAT)
    h = g.op("Gather", [hw, g.const(0, np.int64)])
    w = g.op("Gather", [hw, g.const(1, np.int64)])
    levels = []
    for step, sizes in zip(STEPS, min_sizes(cfg.anchors_per_cell)):
        a = len(sizes)
        fh = g.op("Cast", [g.op("Ceil", [g.op("Div", [h, g.const(float(step))])])], to=TensorProto.INT64)
        fw = g.op("Cast", [g.op("Ceil", [g.op("Div", [w, g.const(float(step))])])], to=TensorProto.INT64)

        def centres(n: str, extent: str, step: int = step) -> str:
            r = g.op("Cast", [g.op("Range", [g.const(0, np.int64), n, g.const(1, np.int64)])], to=TensorProto.FLOAT)
            return g.op("Div", [g.op("Mul", [g.op("Add", [r, g.const(0.5)]), g.const(float(step))]), extent])

        cy, cx = centres(fh, h), centres(fw, w)
        as1 = g.const([0], np.int64)
        grid = g.op("Concat", [g.op("Unsqueeze", [fh, as1]), g.op("Unsqueeze", [fw, as1]),
                               g.const([a, 1], np.int64)], axis=0)  # [fh, fw, a, 1]
        cx4 = g.op("Expand", [g.op("Reshape", [cx, g.const([1, -1, 1, 1], np.int64)]), grid])
        cy4 = g.op("Expand", [g.op("Reshape", [cy, g.const([-1, 1, 1, 1], np.int64)]), grid])
        sz = g.const(np.array(sizes, np.float32).reshape(1, 1, a, 1))
        sw = g.op("Expand", [g.op("Div", [sz, w]), grid])
        sh = g.op("Expand", [g.op("Div", [sz, h]), grid])
        levels.append(g.op("Reshape", [g.op("Concat", [cx4, cy4, sw, sh], axis=3), g.const([-1, 4], np.int64)]))
    priors = g.op("Unsqueeze", [g.op("Concat", levels, axis=0), g.const([0], np.int64)], "priors")  # [1, N, 4]
    p_c = g.op("Slice", [priors, g.const([0], np.int64), g.const([2], np.int64), g.const([2], np.int64)])
    p_s = g.op("Slice", [priors, g.const([2], np.int64), g.const([4], np.int64), g.const([2], np.int64)])
    v0, v1 = g.const(float(VARIANCES[0])), g.const(float(VARIANCES[1]))
    l_c = g.op("Slice", [loc, g.const([0], np.int64), g.const([2], np.int64), g.const([2], np.int64)])
    l_s = g.op("Slice", [loc, g.const([2], np.int64), g.const([4], np.int64), g.const([2], np.int64)])
    centre = g.op("Add", [p_c, g.op("Mul", [g.op("Mul", [l_c, v0]), p_s])])
    size = g.op("Mul", [p_s, g.op("Exp", [g.op("Mul", [l_s, v1])])])
    x1y1 = g.op("Sub", [centre, g.op("Div", [size, g.const(2.0)])])
    wh = g.op("Concat", [g.op("Unsqueeze", [w, g.const([0], np.int64)]),
                         g.op("Unsqueeze", [h, g.const([0], np.int64)])], axis=0)  # [2]: x scale, y scale
    scale4 = g.op("Concat", [wh, wh], axis=0)
    boxes = g.op("Mul", [g.op("Concat", [x1y1, g.op("Add", [x1y1, size])], axis=2), scale4], "boxes_all")
    scores = g.op("Squeeze", [g.op("Slice", [g.op("Softmax", [logits], axis=-1), g.const([1], np.int64),
                                              g.const([2], np.int64), g.const([2], np.int64)]),
                              g.const([2], np.int64)], "scores_all")  # [B, N]
    pts = None
    if ldm is not None:
        ldm_shape = g.op("Concat", [g.op("Slice", [g.op("Shape", [ldm]), g.const([0], np.int64), g.const([2], np.int64)]),
                                    g.const([5, 2], np.int64)], axis=0)
        l5 = g.op("Reshape", [ldm, ldm_shape])  # [B, N, 5, 2]
        p_c5 = g.op("Unsqueeze", [p_c, g.const([2], np.int64)])
        p_s5 = g.op("Unsqueeze", [p_s, g.const([2], np.int64)])
        pts5 = g.op("Mul", [g.op("Add", [p_c5, g.op("Mul", [g.op("Mul", [l5, v0]), p_s5])]), wh])
        pts = g.op("Reshape", [pts5, g.op("Concat", [g.op("Slice", [g.op("Shape", [ldm]), g.const([0], np.int64),
                                                                     g.const([2], np.int64)]),
                                                     g.const([10], np.int64)], axis=0)], "landmarks_all")
    # the top_k best scores (TopK breaks ties by the lower index, as the stable sort does)
    n = g.op("Slice", [g.op("Shape", [scores]), g.const([1], np.int64), g.const([2], np.int64)])
    k = g.op("Min", [n, "top_k"])
    top_s, top_i = g.op("TopK", [scores, k], "top", n_out=2, axis=1, largest=1, sorted=1)

    def take(t: str, width: int) -> str:  # rows top_i of a [B, N, width] tensor
        idx = g.op("Expand", [g.op("Unsqueeze", [top_i, g.const([2], np.int64)]),
                              g.op("Concat", [g.op("Shape", [top_i]), g.const([width], np.int64)], axis=0)])
        return g.op("GatherElements", [t, idx], axis=1)

    top_b = take(boxes, 4)
    one = g.const([0.0, 0.0, 1.0, 1.0])  # inclusive pixel boxes: x2 + 1, y2 + 1 for NMS's IoU
    shifted = g.op("Add", [top_b, one])
    yx = g.op("Gather", [shifted, g.const([1, 0, 3, 2], np.int64)], axis=2)  # ONNX wants y1 x1 y2 x2
    sel = g.op("NonMaxSuppression", [yx, g.op("Unsqueeze", [top_s, g.const([1], np.int64)]), "max_detections",
                                     "iou_threshold", "score_threshold"], "selected")  # [K, 3]
    b_i = g.op("Gather", [sel, g.const([0, 2], np.int64)], axis=1)  # (image, position in the top k)
    outs = {"boxes": g.op("GatherND", [top_b, b_i]), "scores": g.op("GatherND", [top_s, b_i])}
    if pts is not None:
        outs["landmarks"] = g.op("GatherND", [take(pts, 10), b_i])
    outs["batch_index"] = g.op("Gather", [sel, g.const(0, np.int64)], axis=1)
    # rename the final tensors to the output names; the raw head outputs stay available (raw_*)
    raw_outputs = [o for o in proto.graph.output]
    del proto.graph.output[:]
    for name, tensor in outs.items():
        g.op("Identity", [tensor])
        proto.graph.node[-1].output[0] = name
        elem = TensorProto.INT64 if name == "batch_index" else TensorProto.FLOAT
        shape_ = ["K"] if name in ("scores", "batch_index") else ["K", 4 if name == "boxes" else 10]
        proto.graph.output.append(helper.make_tensor_value_info(name, elem, shape_))
    for o in raw_outputs:
        o.name = raw[o.name]
        proto.graph.output.append(o)
    for vi in proto.graph.value_info:  # shape annotations of the renamed tensors
        vi.name = raw.get(vi.name, vi.name)
    return proto


def match(got: dict[str, np.ndarray], want: dict[str, np.ndarray], min_iou: float = 0.99) -> dict[str, Any]:
    """Compare two detection sets (graph vs PyTorch post-processing of the same head outputs):
    detections pair up per image when their boxes overlap with IoU >= min_iou. NMS decisions on
    IoUs within float rounding of the threshold can flip, so a few unpaired detections are expected
    on untrained weights (hundreds of near-duplicate boxes); trained models have few such ties."""
    unmatched, diff, pairs = 0, 0.0, 0
    for b in np.union1d(got["batch_index"], want["batch_index"]):
        g = got["batch_index"] == b
        t = want["batch_index"] == b
        gb, tb = got["boxes"][g].astype(np.float64), want["boxes"][t].astype(np.float64)
        if len(gb) == 0 or len(tb) == 0:
            unmatched += len(gb) + len(tb)
            continue
        x1 = np.maximum(gb[:, None, 0], tb[None, :, 0])
        y1 = np.maximum(gb[:, None, 1], tb[None, :, 1])
        x2 = np.minimum(gb[:, None, 2], tb[None, :, 2])
        y2 = np.minimum(gb[:, None, 3], tb[None, :, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
        iou = inter / np.maximum(area(gb)[:, None] + area(tb)[None, :] - inter, 1e-12)
        best = iou.argmax(1)
        ok = iou[np.arange(len(gb)), best] >= min_iou
        unmatched += int((~ok).sum()) + int((iou.max(0) < min_iou).sum())
        gi, ti = np.nonzero(ok)[0], best[ok]
        pairs += len(gi)
        for key in ("boxes", "scores", "landmarks"):
            if key in got and key in want and len(gi):
                diff = max(diff, float(np.abs(got[key][g][gi].astype(np.float64) - want[key][t][ti]).max()))
    total = len(got["scores"]) + len(want["scores"])
    return {"onnx": int(len(got["scores"])), "torch": int(len(want["scores"])), "paired": pairs,
            "unpaired": unmatched, "max_abs_diff": diff, "total": total}


def reference(raw: dict[str, np.ndarray], h: int, w: int, cfg: FeatherFaceConfig | None) -> dict[str, np.ndarray]:
    """PyTorch's post-processing (`inference.detector.postprocess`) of the head outputs `raw`
    (boxes, logits, landmarks [B, N, .]), in the post-processed graph's layout."""
    from featherface_tune.inference.detector import postprocess

    loc, logits = torch.from_numpy(raw["boxes"]), torch.from_numpy(raw["logits"])
    ldm = torch.from_numpy(raw["landmarks"]) if "landmarks" in raw else None
    anchors = cfg.anchors_per_cell if cfg is not None else 2
    parts: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUTS}
    for i in range(loc.shape[0]):
        d = postprocess(loc[i], logits[i], None if ldm is None else ldm[i], (h, w), anchors,
                        DEFAULTS["score_threshold"], DEFAULTS["iou_threshold"], int(DEFAULTS["top_k"]),
                        int(DEFAULTS["max_detections"]))
        parts["boxes"].append(d.boxes)
        parts["scores"].append(d.scores)
        if d.landmarks is not None:
            parts["landmarks"].append(d.landmarks)
        parts["batch_index"].append(np.full(len(d), i, np.int64))
    return {k: np.concatenate(v) for k, v in parts.items() if v}
