"""The plain-PyTorch modulated deformable conv against a direct bilinear-sampling loop, against a
regular conv for zero offsets and unit mask, and against torchvision when it imports."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from featherface_tune.models.blocks import deform
from featherface_tune.models.blocks.deform import DeformableConv2d, deform_conv2d, deform_conv2d_plain


def _bilinear_zero(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Value of img [C, H, W] at (y, x); pixels outside the image read as zero."""
    c, h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = torch.zeros(c, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def naive_deform(x, offset, mask, weight, bias, stride, pad, dil):
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    out = torch.zeros(b, o, ho, wo, dtype=x.dtype)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                acc = torch.zeros(o, dtype=x.dtype)
                for ki in range(kh):
                    for kj in range(kw):
                        k = ki * kw + kj
                        y = i * stride - pad + ki * dil + float(offset[n, 2 * k, i, j])
                        xx = j * stride - pad + kj * dil + float(offset[n, 2 * k + 1, i, j])
                        v = _bilinear_zero(x[n], y, xx) * mask[n, k, i, j]
                        acc += weight[:, :, ki, kj] @ v
                out[n, :, i, j] = acc + (bias if bias is not None else 0)
    return out


@pytest.mark.parametrize("stride, pad, dil, h, w", [(1, 1, 1, 5, 6), (2, 1, 1, 7, 5), (1, 2, 2, 6, 6)])
def test_matches_direct_sampling_loop(stride, pad, dil, h, w):
    g = torch.Generator().manual_seed(stride * 10 + dil)
    x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    ho = (h + 2 * pad - dil * 2 - 1) // stride + 1
    wo = (w + 2 * pad - dil * 2 - 1) // stride + 1
    offset = 2.5 * torch.randn(2, 18, ho, wo, generator=g, dtype=torch.float64)  # many samples leave the image
    mask = torch.rand(2, 9, ho, wo, generator=g, dtype=torch.float64) * 2
    got = deform_conv2d_plain(x, offset, mask, weight, bias, (stride, stride), (pad, pad), (dil, dil))
    want = naive_deform(x, offset, mask, weight, bias, stride, pad, dil)
    assert torch.allclose(got, want, atol=1e-9), (got - want).abs().max()


def test_zero_offset_unit_mask_is_a_regular_conv():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, 11, generator=g)
    weight = torch.randn(7, 5, 3, 3, generator=g)
    off = torch.zeros(2, 18, 9, 11)
    mask = torch.ones(2, 9, 9, 11)
    got = deform_conv2d(x, off, mask, weight)
    assert torch.allclose(got, F.conv2d(x, weight, padding=1), atol=1e-5)


def test_fresh_module_equals_conv_with_mask_one():
    # offset and modulator convs start at zero: mask = 2*sigmoid(0) = 1, offsets 0
    m = DeformableConv2d(4, 6)
    x = torch.randn(1, 4, 8, 8)
    assert torch.allclose(m(x), F.conv2d(x, m.regular_conv.weight, padding=1), atol=1e-5)


def test_gradients_flow_to_every_input():
    m = DeformableConv2d(3, 4)
    torch.nn.init.normal_(m.offset_conv.weight, std=0.1)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    m(x).square().sum().backward()
    for t in (x.grad, m.offset_conv.weight.grad, m.modulator_conv.weight.grad, m.regular_conv.weight.grad):
        assert t is not None and t.abs().sum() > 0


def test_op_is_one_node_in_a_trace():
    m = DeformableConv2d(3, 4).eval()
    graph = torch.jit.trace(m, torch.randn(1, 3, 8, 8)).inlined_graph
    kinds = [n.kind() for n in graph.nodes()]
    assert kinds.count("featherface_tune::deform_conv2d") == 1
    assert "aten::grid_sampler" not in kinds


@pytest.mark.skipif("torchvision" not in deform.BACKENDS, reason="torchvision does not import here")
def test_torchvision_backend_equal():  # pragma: no cover - runs on GPU machines with torchvision
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 10, 9, generator=g)
    w = torch.randn(5, 4, 3, 3, generator=g)
    off = 3 * torch.randn(2, 18, 10, 9, generator=g)
    mask = torch.rand(2, 9, 10, 9, generator=g)
    old = deform.set_backend("plain")
    try:
        plain = deform_conv2d(x, off, mask, w)
        deform.set_backend("torchvision")
        tv = deform_conv2d(x, off, mask, w)
    finally:
        deform.set_backend(old)  # the machine's default again, not "plain"
    assert torch.allclose(plain, tv, atol=1e-4)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unavailable"):
        deform.set_backend("cuda-magic")


def test_set_backend_returns_the_one_it_replaced():
    old = deform.set_backend("plain")
    try:
        assert old in deform.BACKENDS
        assert deform.set_backend("plain") == "plain"
    finally:
        deform.set_backend(old)
