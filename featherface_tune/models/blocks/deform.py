"""Modulated deformable convolution (DCNv2) in plain PyTorch, as a traceable custom op, and its
fvcore handle (its cost: `featherface_tune.models.arch.ssh`).

`torch.ops.featherface_tune.deform_conv2d` follows `torchvision.ops.deform_conv2d`: offsets are laid
out as (dy, dx) pairs per kernel position in row-major order, the mask multiplies each sampled value,
and bilinear sampling reads zero outside the image. It is one node in a JIT trace, so fvcore counts
it through `deform_conv_flop_jit` instead of silently ignoring it. When torchvision imports (GPU
machines) its kernel does the work; otherwise the plain implementation below does.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


try:  # torchvision has no CPU build on some machines; never require it
    from torchvision.ops import deform_conv2d as _tv_deform_conv2d  # type: ignore
except Exception:  # pragma: no cover - depends on the machine
    _tv_deform_conv2d = None

BACKENDS = ("plain",) + (("torchvision",) if _tv_deform_conv2d is not None else ())
_state = {"backend": "torchvision" if _tv_deform_conv2d is not None else "plain"}


def set_backend(name: str) -> str:
    """Choose the kernel behind the op: "plain" always works, "torchvision" when it imports.
    Returns the backend it replaced, so a caller can put it back."""
    if name not in BACKENDS:
        raise ValueError(f"deformable-conv backend {name!r} unavailable; available: {', '.join(BACKENDS)}")
    previous, _state["backend"] = _state["backend"], name
    return previous


def deform_conv2d_plain(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                        weight: torch.Tensor, bias: torch.Tensor | None,
                        stride: Sequence[int] = (1, 1), padding: Sequence[int] = (1, 1),
                        dilation: Sequence[int] = (1, 1)) -> torch.Tensor:
    """Modulated deformable conv: sample with offsets (bilinear, zeros outside), scale by mask,
    then one dense matrix product with the kernel."""
    b, c, h, w = x.shape
    out_c, c_w, kh, kw = weight.shape
    if c_w != c:
        raise ValueError("grouped deformable convolution is not supported")
    k = kh * kw
    ho, wo = offset.shape[-2:]
    dev, dt = x.device, x.dtype
    rows = torch.arange(ho, device=dev, dtype=dt) * stride[0] - padding[0]
    cols = torch.arange(wo, device=dev, dtype=dt) * stride[1] - padding[1]
    ky = (torch.arange(kh, device=dev, dtype=dt) * dilation[0]).repeat_interleave(kw)
    kx = (torch.arange(kw, device=dev, dtype=dt) * dilation[1]).repeat(kh)
    off = offset.reshape(b, k, 2, ho, wo)
    py = ky.view(1, k, 1, 1) + rows.view(1, 1, ho, 1) + off[:, :, 0]
    px = kx.view(1, k, 1, 1) + cols.view(1, 1, 1, wo) + off[:, :, 1]
    # pixel coordinates -> grid_sample's normalised coordinates (align_corners=False)
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).reshape(b, k * ho, wo, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(b, c, k, ho, wo) * mask.reshape(b, 1, k, ho, wo)
    out = torch.matmul(weight.reshape(out_c, c * k), sampled.reshape(b, c * k, ho * wo))
    out = out.reshape(b, out_c, ho, wo)
    if bias is not None:
        out = out + bias.view(1, out_c, 1, 1)
    return out


def _op_impl(x, offset, mask, weight, bias, stride, padding, dilation):  # type: ignore[no-untyped-def]
    if _state["backend"] == "torchvision":  # pragma: no cover - GPU machines
        return _tv_deform_conv2d(x, offset, weight, bias, stride=tuple(stride), padding=tuple(padding),
                                 dilation=tuple(dilation), mask=mask)
    return deform_conv2d_plain(x, offset, mask, weight, bias, stride, padding, dilation)


_LIB = torch.library.Library("featherface_tune", "DEF")
_LIB.define("deform_conv2d(Tensor input, Tensor offset, Tensor mask, Tensor weight, Tensor? bias, "
            "int[] stride, int[] padding, int[] dilation) -> Tensor")
_LIB.impl("deform_conv2d", _op_impl, "CompositeImplicitAutograd")


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, stride: Sequence[int] = (1, 1),
                  padding: Sequence[int] = (1, 1), dilation: Sequence[int] = (1, 1)) -> torch.Tensor:
    return torch.ops.featherface_tune.deform_conv2d(x, offset, mask, weight, bias, list(stride),
                                                    list(padding), list(dilation))


class DeformableConv2d(nn.Module):
    """3x3 modulated deformable conv with its offset (18 ch) and modulator (9 ch) convs.

    Key names and the 2*sigmoid modulator follow the official FeatherFace code; offset and
    modulator convs start at zero, so a fresh layer equals a plain conv with mask 1.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, bias: bool = False):
        super().__init__()
        k = kernel_size
        self.stride, self.padding = (stride, stride), (padding, padding)
        self.offset_conv = nn.Conv2d(cin, 2 * k * k, k, stride, padding, bias=True)
        self.modulator_conv = nn.Conv2d(cin, k * k, k, stride, padding, bias=True)
        for layer in (self.offset_conv, self.modulator_conv):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)  # type: ignore[arg-type]  # both convs have a bias
        self.regular_conv = nn.Conv2d(cin, cout, k, stride, padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return deform_conv2d(x, offset, mask, self.regular_conv.weight, self.regular_conv.bias,
                             self.stride, self.padding)


def deform_conv_flop_jit(weight_index: int) -> Any:
    """fvcore handle for a deformable-conv op whose weight is input `weight_index`: the MACs of a
    dense conv with the same weight and output shape (bilinear sampling excluded)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        from fvcore.nn.jit_handles import get_shape

        o, c, kh, kw = get_shape(inputs[weight_index])
        out = get_shape(outputs[0])
        return out[0] * out[2] * out[3] * o * c * kh * kw

    return handle


# op name -> fvcore handle; featherface_tune's op takes the weight 4th, torchvision's 2nd
FVCORE_HANDLES = {
    "featherface_tune::deform_conv2d": deform_conv_flop_jit(3),
    "torchvision::deform_conv2d": deform_conv_flop_jit(1),
}
