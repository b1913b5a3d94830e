"""The `Cost` record and the per-op cost formulas shared by all blocks (fvcore's convention)."""

from __future__ import annotations

from typing import NamedTuple


class Cost(NamedTuple):
    params: int
    macs: int

    def __add__(self, other: "Cost") -> "Cost":  # type: ignore[override]
        return Cost(self.params + other.params, self.macs + other.macs)


ZERO = Cost(0, 0)


def conv_out(n: int, k: int = 3, stride: int = 1, pad: int = 1) -> int:
    """Output length of a convolution or pooling along one axis."""
    return (n + 2 * pad - k) // stride + 1


def conv(cin: int, cout: int, k: int, hw: int, groups: int = 1, bias: bool = False) -> Cost:
    """k x k convolution producing `hw` output positions."""
    w = cout * (cin // groups) * k * k
    return Cost(w + (cout if bias else 0), w * hw)


def bn(c: int, hw: int) -> Cost:
    """BatchNorm2d over c channels and hw positions (eval mode, affine)."""
    return Cost(2 * c, 2 * c * hw)


def upsample(c: int, hw_out: int) -> Cost:
    """Nearest upsampling: one per output element."""
    return Cost(0, c * hw_out)
