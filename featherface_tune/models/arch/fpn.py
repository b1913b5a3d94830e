"""The RetinaFace FPN neck: its cost and how a checkpoint shows it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from featherface_tune.errors import InputError
from featherface_tune.models.arch.block import Block, Polynomial, Shapes, Sizes, need
from featherface_tune.models.arch.cost import Parts, Priced, conv_bn1x1_cost, conv_bn_cost, priced, upsample
from featherface_tune.models.config import backbone_channels


@lru_cache(maxsize=1024)
def price_fpn(in_channels: tuple[int, int, int], c: int, at: Sizes) -> Priced:
    """1x1 laterals at P3/P4/P5 and 3x3 merges at P4/P3 (conv + BN + LeakyReLU each), two nearest
    upsamplings."""
    hw3, hw4, hw5 = at.hws
    lat = (conv_bn1x1_cost(in_channels[0], c, hw3) + conv_bn1x1_cost(in_channels[1], c, hw4)
           + conv_bn1x1_cost(in_channels[2], c, hw5))
    merge = conv_bn_cost(c, c, hw4) + conv_bn_cost(c, c, hw3)
    positions = hw3 + hw4 + hw5 + hw4 + hw3
    parts = Parts(bn_params=10 * c, bn_macs=2 * c * positions, upsample_macs=c * (hw4 + hw3),
                  leaky_elems=c * positions)
    return priced(*(lat + merge + upsample(c, hw4) + upsample(c, hw3)), parts)


def infer_fpn(shapes: Shapes, fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fpn.*` keys; the P3 lateral has the neck's width. The last neck block: no neck is an error."""
    if "neck" in fields:
        return {}
    if not any(k.startswith("fpn.") for k in shapes):
        raise InputError("cannot infer the neck: no `bifpn.*` or `fpn.*` keys; not a FeatherFace/RetinaFace checkpoint?")
    return {"neck": "fpn", "neck_channels": need(shapes, "fpn.output1.0.weight", "the FPN width")[0],
            "bifpn_repeats": 0}


BLOCK = Block(
    "fpn", "neck", "neck", "featherface_tune.models.blocks.fpn:FPN", ("fpn",),
    args=lambda f, _: (backbone_channels(f["backbone_width"]), f["neck_channels"]),
    reads=("neck", "backbone_width", "neck_channels"), price=price_fpn,
    present=lambda f: f["neck"] == "fpn", infer=infer_fpn,
    polynomial=Polynomial("neck_channels", 2))
