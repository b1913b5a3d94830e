"""The EfficientDet BiFPN neck (three levels, fast normalised fusion) as FeatherFace uses it: its
cost and how a checkpoint shows it."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any, Mapping

from featherface_tune.errors import InputError
from featherface_tune.models.arch.block import Block, Polynomial, Shapes, Sizes, need
from featherface_tune.models.arch.cost import Parts, Priced, priced
from featherface_tune.models.config import backbone_channels


def same_pool_in(h: int, w: int) -> int:
    """Positions of the zero-padded input of the 3x3 stride-2 "same" max-pool on an h x w map."""
    return ((math.ceil(h / 2) - 1) * 2 + 3) * ((math.ceil(w / 2) - 1) * 2 + 3)


@lru_cache(maxsize=16384)
def price_bifpn(in_channels: tuple[int, int, int], c: int, repeats: int, at: Sizes) -> Priced:
    """Per cell: four separable blocks (dw 3x3, pw 1x1 + bias, BN) at P4, P3, P4, P5, two nearest
    upsamplings (to P4, P3) and 10 fusion weights. The first cell adds five 1x1 projections
    (bias + BN): P3, P4 twice, P5 twice. Parts: the BatchNorms and biases, the upsamplings, the fusion
    weights (each through an nn.ReLU in the official code), the max-pools on the padded P3 and P4 maps."""
    # written out, not as `cost.conv` / `cost.bn` calls: a search meets a new neck width on most of its
    # first configs, and ~20 Cost objects per miss cost about 10 us of a 45 us count (benchmarks/count_speed.py)
    hw3, hw4, hw5 = at.hws
    sep_macs = 9 * c + c * c + 2 * c  # per position
    cell_params = 4 * (sep_macs + c) + 10
    cell_macs = sep_macs * (2 * hw4 + hw3 + hw5) + c * (hw4 + hw3)
    c3, c4, c5 = in_channels
    proj_params = (c3 + 2 * c4 + 2 * c5) * c + 5 * 3 * c
    proj_macs = (c3 + 2) * c * hw3 + 2 * (c4 + 2) * c * hw4 + 2 * (c5 + 2) * c * hw5
    cell_pos = 2 * hw4 + hw3 + hw5
    proj_pos = hw3 + 2 * hw4 + 2 * hw5
    pools = same_pool_in(*at.levels[0]) + same_pool_in(*at.levels[1])
    parts = Parts(bn_params=2 * c * (4 * repeats + 5), bn_macs=2 * c * (cell_pos * repeats + proj_pos),
                  bias_macs=c * (cell_pos * repeats + proj_pos), upsample_macs=c * (hw4 + hw3) * repeats,
                  fusion_params=10 * repeats, relu_module_elems=10 * repeats,
                  pool_module_in=c * pools * repeats)
    return priced(cell_params * repeats + proj_params, cell_macs * repeats + proj_macs, parts)


def infer_bifpn(shapes: Shapes, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Cells `bifpn.0` .. `bifpn.<n-1>`; the first cell's P3 projection has the neck's width."""
    cells = {int(m.group(1)) for k in shapes if (m := re.match(r"bifpn\.(\d+)\.", k))}
    if not cells:
        return {}
    if cells != set(range(len(cells))):
        raise InputError(f"cannot infer bifpn_repeats: BiFPN cells {sorted(cells)} are not 0..n-1")
    width = need(shapes, "bifpn.0.p3_down_channel.0.conv.weight", "the BiFPN width")[0]
    return {"neck": "bifpn", "neck_channels": width, "bifpn_repeats": len(cells)}


BLOCK = Block(
    "bifpn", "neck", "neck", "featherface_tune.models.blocks.bifpn:BiFPN", ("bifpn",),
    args=lambda f, _: (backbone_channels(f["backbone_width"]), f["neck_channels"], f["bifpn_repeats"]),
    reads=("neck", "backbone_width", "neck_channels", "bifpn_repeats"), price=price_bifpn,
    present=lambda f: f["neck"] == "bifpn", infer=infer_bifpn,
    polynomial=Polynomial("neck_channels", 2))
