"""torchvision's kernels (used on GPU machines) against the plain-PyTorch reference, on the CPU.

They skip where torchvision does not import (the main venv, torch 2.13 CPU); `.ci/torchvision-tests.sh`
runs them for real in a second venv with torch 2.14.1 + torchvision 0.29.1.
Tolerances: deformable conv outputs within 1e-4 absolute (float32, values of order 1), gradients
within 1e-3; NMS keeps exactly the same boxes in the same order; a whole FeatherFace forward with
the torchvision deformable conv within 1e-3 of the plain one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.torchvision
tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision does not import here (see .ci/torchvision-tests.sh)")

from featherface_tune.inference.nms import nms  # noqa: E402
from featherface_tune.models.blocks import deform  # noqa: E402


def _inputs(seed: int, b: int = 2, c: int = 6, h: int = 9, w: int = 11, stride: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    ho, wo = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    offset = 2.5 * torch.randn(b, 18, ho, wo, generator=g)  # reaches outside the image too
    mask = 2 * torch.rand(b, 9, ho, wo, generator=g)
    weight = torch.randn(5, c, 3, 3, generator=g)
    bias = torch.randn(5, generator=g)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize("stride", [1, 2])
def test_deform_conv2d_torchvision_equals_plain(stride: int) -> None:
    x, offset, mask, weight, bias = _inputs(stride, stride=stride)
    ref = deform.deform_conv2d_plain(x, offset, mask, weight, bias, (stride, stride), (1, 1), (1, 1))
    tv = tv_ops.deform_conv2d(x, offset, weight, bias, stride=stride, padding=1, mask=mask)
    torch.testing.assert_close(tv, ref, atol=1e-4, rtol=1e-4)


def test_deform_conv2d_gradients_agree() -> None:
    grads = []
    for fn in ("plain", "torchvision"):
        x, offset, mask, weight, bias = (t.clone().requires_grad_(True) for t in _inputs(7))
        if fn == "plain":
            y = deform.deform_conv2d_plain(x, offset, mask, weight, bias)
        else:
            y = tv_ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        grads.append([t.grad for t in (x, offset, mask, weight, bias)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_model_forward_with_torchvision_backend_equals_plain() -> None:
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.presets import get_preset

    torch.manual_seed(0)
    model = build_model(get_preset("featherface-official")).eval()
    with torch.no_grad():  # non-zero offsets, so the deformable sampling really differs from a conv
        for m in model.modules():
            if isinstance(m, deform.DeformableConv2d):
                m.offset_conv.weight.normal_(0, 0.05)
    x = torch.randn(1, 3, 96, 128)
    old = deform.set_backend("plain")
    try:
        outs = {}
        for name in ("plain", "torchvision"):
            deform.set_backend(name)
            with torch.no_grad():
                outs[name] = model(x)
    finally:
        deform.set_backend(old)
    for a, b in zip(outs["plain"], outs["torchvision"]):
        torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_nms_torchvision_keeps_the_same_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
    wh = rng.uniform(4, 60, (n, 2)).astype(np.float32)
    boxes = torch.from_numpy(np.concatenate([xy, xy + wh], 1))
    scores = torch.from_numpy(rng.uniform(0, 1, n).astype(np.float32))
    for thr in (0.3, 0.4, 0.7):
        plain = nms(boxes, scores, thr, backend="plain")
        tv = nms(boxes, scores, thr, backend="torchvision")
        assert tv.tolist() == plain.tolist()
    assert nms(boxes, scores, 0.4, backend="auto").tolist() == nms(boxes, scores, 0.4).tolist()
