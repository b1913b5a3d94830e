"""The channel shuffle after each SSH: the official block (shuffle, 1x1 down, dw 3x3, 1x1 up), the
shuffle alone, or nothing: its cost and how a checkpoint shows it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from featherface_tune.models.arch.block import Block, Polynomial, Shapes, ssh_width
from featherface_tune.models.arch.cost import FREE, Parts, Priced, bn, conv, conv_bn1x1_cost, priced

KEYS = ("ssh1_cs", "ssh2_cs", "ssh3_cs")


@lru_cache(maxsize=65536)
def price_shuffle(kind: str, c: int, groups: int, hw: int) -> Priced:
    """The block: 1x1 c->c/2, BN, dw 3x3, BN, 1x1 c/2->c, BN, no biases, so MACs = params x positions;
    Parts: its three BatchNorms and closing nn.ReLU. The shuffle itself is free."""
    if kind != "block":
        return FREE
    h = c // 2
    cost = conv_bn1x1_cost(c, h, hw) + conv(h, h, 3, hw, groups=h) + bn(h, hw) + conv_bn1x1_cost(h, c, hw)
    bn_channels = 2 * h + c
    return priced(*cost, Parts(bn_params=2 * bn_channels, bn_macs=2 * bn_channels * hw, relu_module_elems=c * hw))


def infer_shuffle(shapes: Shapes, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Only the block has weights. Without them, plain and none look alike: a caller's hint in
    `fields["shuffle"]` decides, else RetinaFace (FPN neck, plain SSH) has none and the FeatherFace
    family keeps the permutation. The number of groups leaves no trace: 2, the official value."""
    if any(k.startswith(KEYS[0] + ".") for k in shapes):
        return {"shuffle": "block"}
    if "shuffle" in fields:
        return {}
    return {"shuffle": "none" if fields["neck"] == "fpn" and not fields["ssh_deformable"] else "plain"}


BLOCK = Block(
    "shuffle", "shuffle", "level", "featherface_tune.models.blocks.shuffle:shuffle_module", KEYS,
    args=lambda f, i: (f["shuffle"], ssh_width(f, i), f["shuffle_groups"]),
    reads=("shuffle", "ssh_channels", "shuffle_groups"), price=price_shuffle, term="level", infer=infer_shuffle,
    polynomial=Polynomial("ssh_channels", 2, period=2))
