"""`Cost`, `Parts` and the per-op formulas every block's cost is written in (fvcore's convention:
one fused multiply-add counts 1). Torch-free, like the rest of `featherface_tune.models.arch`."""

from __future__ import annotations

from typing import NamedTuple

# builds a NamedTuple from the tuple of its fields, without its Python-level __new__ (about half the
# time): every new instance a search prices builds several Costs
_new = tuple.__new__


class Cost(NamedTuple):
    params: int
    macs: int

    def __add__(self, other: "Cost") -> "Cost":  # type: ignore[override]
        return _new(Cost, (self[0] + other[0], self[1] + other[1]))


ZERO = Cost(0, 0)


class Parts(NamedTuple):
    """The slices of a block's full `Cost` that counting tools disagree on (each is already inside
    the Cost; conventions in `featherface_tune.counter.conventions` add or drop them), and the
    element counts of the ops the Cost leaves at 0 (activations, pooling), laid out as the official
    code lays them out: nn.ReLU / nn.LeakyReLU / nn.MaxPool2d modules vs F.relu / F.*_pool2d calls."""

    bn_params: int = 0  # BatchNorm scale + shift
    bn_macs: int = 0  # BatchNorm at 2 per element
    bias_macs: int = 0  # bias elements x output positions (convs), x calls (linears): not in Cost's MACs
    upsample_macs: int = 0  # nearest upsampling, 1 per output element (F.interpolate)
    fusion_params: int = 0  # BiFPN fusion weights: nn.Parameters held by non-leaf modules
    dcn_params: int = 0  # deformable convs' main weights (used through the functional op)
    dcn_macs: int = 0  # ... and their dense-conv MACs
    dcn_aux_macs: int = 0  # offset + modulator convs (inside the full Cost, outside the dense one)
    leaky_elems: int = 0  # nn.LeakyReLU module outputs
    relu_module_elems: int = 0  # nn.ReLU module outputs, per call
    relu_call_elems: int = 0  # F.relu outputs
    pool_module_in: int = 0  # nn.MaxPool2d module inputs (after padding)
    pool_call_in: int = 0  # F.avg_pool2d / F.max_pool2d inputs
    dcn_sampling_macs: int = 0  # bilinear sampling of the deformable convs: outside every Cost, reported apart

    def __add__(self, other: "Parts") -> "Parts":  # type: ignore[override]
        return Parts(*(a + b for a, b in zip(self, other)))


NO_PARTS = Parts()


class Priced(NamedTuple):
    """A block's full cost (every convolution counted) and its Parts: what a counting convention
    restates (`Convention.apply`)."""

    cost: Cost
    parts: Parts

    def __add__(self, other: "Priced") -> "Priced":  # type: ignore[override]
        return Priced(self.cost + other.cost, self.parts + other.parts)


FREE = Priced(ZERO, NO_PARTS)


def priced(params: int, macs: int, parts: Parts = NO_PARTS) -> Priced:
    """`Priced(Cost(params, macs), parts)`, built without the NamedTuples' Python-level constructors:
    every price returns one, and a search prices thousands of new instances."""
    return _new(Priced, (_new(Cost, (params, macs)), parts))


def conv_out(n: int, k: int = 3, stride: int = 1, pad: int = 1) -> int:
    """Output length of a convolution or pooling along one axis."""
    return (n + 2 * pad - k) // stride + 1


def conv(cin: int, cout: int, k: int, hw: int, groups: int = 1, bias: bool = False) -> Cost:
    """k x k convolution producing `hw` output positions."""
    w = cout * (cin // groups) * k * k
    return _new(Cost, (w + (cout if bias else 0), w * hw))


def bn(c: int, hw: int) -> Cost:
    """BatchNorm2d over c channels and hw positions (eval mode, affine)."""
    return _new(Cost, (2 * c, 2 * c * hw))


def upsample(c: int, hw_out: int) -> Cost:
    """Nearest upsampling: one per output element."""
    return _new(Cost, (0, c * hw_out))


def conv_bn_cost(cin: int, cout: int, hw_out: int) -> Cost:
    """3x3 conv without bias + BN: every parameter is one MAC per output position."""
    p = 9 * cin * cout + 2 * cout
    return _new(Cost, (p, p * hw_out))


def conv_bn1x1_cost(cin: int, cout: int, hw: int) -> Cost:
    """1x1 conv without bias + BN."""
    return conv(cin, cout, 1, hw) + bn(cout, hw)


def conv_dw_cost(cin: int, cout: int, hw_out: int) -> Cost:
    """dw 3x3 (9 cin) + BN (2 cin) + pw 1x1 (cin cout) + BN (2 cout), no biases: every parameter is
    one MAC per output position."""
    p = 11 * cin + cin * cout + 2 * cout
    return _new(Cost, (p, p * hw_out))
