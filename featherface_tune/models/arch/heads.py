"""The per-level 1x1 prediction heads (class, box, landmarks): their cost and how a checkpoint shows
them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from featherface_tune.errors import ConfigError
from featherface_tune.models.arch.block import Block, Polynomial, Shapes, always, need, ssh_width
from featherface_tune.models.arch.cost import Parts, Priced, conv, priced

# model attribute -> values per anchor, in the order forward returns them after the boxes
HEADS = (("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10))


@lru_cache(maxsize=4096)
def price_head(cin: int, anchors: int, values: int, hw: int) -> Priced:
    """A 1x1 conv with bias to anchors x values outputs; Parts: its bias."""
    outs = anchors * values
    return priced(*conv(cin, outs, 1, hw, bias=True), Parts(bias_macs=outs * hw))


def infer_heads(shapes: Shapes, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Anchors from the class heads' outputs (2 per anchor, equal at every level); landmarks when
    their heads are there."""
    outs = [need(shapes, f"ClassHead.{i}.conv1x1.weight", "anchors_per_cell")[0] for i in range(3)]
    if len(set(outs)) != 1:
        raise ConfigError(f"cannot infer anchors_per_cell (ClassHead outputs): levels disagree ({outs})")
    if outs[0] % 2:
        raise ConfigError(f"cannot infer anchors_per_cell: ClassHead has {outs[0]} outputs, not 2 per anchor")
    return {"anchors_per_cell": outs[0] // 2, "landmarks": "LandmarkHead.0.conv1x1.weight" in shapes}


def _head(name: str, values: int) -> Block:
    """One kind of head, an nn.ModuleList of one 1x1 conv per level (`Name.0` .. `Name.2`)."""
    return Block(
        name, "heads", "head", "featherface_tune.models.blocks.heads:Head", tuple(f"{name}.{i}" for i in range(3)),
        args=lambda f, i: (ssh_width(f, i), f["anchors_per_cell"], values),
        reads=("ssh_channels", "anchors_per_cell") + (("landmarks",) if name == "LandmarkHead" else ()),
        price=price_head, term="level",
        present=(lambda f: f["landmarks"]) if name == "LandmarkHead" else always,
        infer=infer_heads if name == "ClassHead" else None,
        polynomial=Polynomial("ssh_channels", 1))


BLOCKS = tuple(_head(name, values) for name, values in HEADS)
