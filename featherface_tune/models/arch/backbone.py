"""The MobileNetV1 backbone (stages 1-3, as RetinaFace/FeatherFace use it): its plan, its cost and
how a checkpoint shows its width."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator, Mapping

from featherface_tune.models.arch.block import Block, Shapes, Sizes, need
from featherface_tune.models.arch.cost import Parts, Priced, conv_bn_cost, conv_dw_cost, conv_out, priced


def mobilenet_plan(width: float) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """(cin, cout, stride) of every unit per stage; the first unit of stage 1 is the full conv."""
    m = round(width * 32)  # channels per 1/32 of width: 8 at width 0.25
    c = lambda base: base * m // 32  # noqa: E731 - exact for width multiples of 1/32
    stage1 = ((3, c(32), 2), (c(32), c(64), 1), (c(64), c(128), 2), (c(128), c(128), 1),
              (c(128), c(256), 2), (c(256), c(256), 1))
    stage2 = ((c(256), c(512), 2),) + ((c(512), c(512), 1),) * 5
    stage3 = ((c(512), c(1024), 2), (c(1024), c(1024), 1))
    return stage1, stage2, stage3


def level_sizes(h: int, w: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Spatial sizes of the stride-8/16/32 feature maps for an h x w input."""
    sizes = []
    for _ in range(5):
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        sizes.append((h, w))
    return sizes[2], sizes[3], sizes[4]


def _units(width: float, h: int, w: int) -> Iterator[tuple[int, int, int, bool]]:
    """(cin, cout, output positions, whether it is the full conv) of every unit, in order."""
    for si, stage in enumerate(mobilenet_plan(width)):
        for ui, (cin, cout, stride) in enumerate(stage):
            h, w = conv_out(h, 3, stride, 1), conv_out(w, 3, stride, 1)
            yield cin, cout, h * w, si == ui == 0


@lru_cache(maxsize=256)
def price_backbone(width: float, at: Sizes) -> Priced:
    """Every unit's conv(s) + BatchNorm(s), no biases. Parts: the BatchNorms (one per full conv,
    two per dw unit), each followed by a LeakyReLU."""
    params = macs = bn = bn_pos = 0
    for cin, cout, hw, first in _units(width, at.h, at.w):
        p, m = (conv_bn_cost if first else conv_dw_cost)(cin, cout, hw)
        params, macs = params + p, macs + m
        c = cout if first else cin + cout
        bn, bn_pos = bn + c, bn_pos + c * hw
    return priced(params, macs, Parts(bn_params=2 * bn, bn_macs=2 * bn_pos, leaky_elems=bn_pos))


def infer_backbone(shapes: Shapes, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The stem conv has 32 x width output channels."""
    return {"backbone_width": need(shapes, "body.stage1.0.0.weight", "the backbone width")[0] / 32}


BLOCK = Block(
    "backbone", "backbone", "body", "featherface_tune.models.blocks.backbone:MobileNetV1Body", ("body",),
    args=lambda f, _: (f["backbone_width"],), reads=("backbone_width",), price=price_backbone,
    infer=infer_backbone)
