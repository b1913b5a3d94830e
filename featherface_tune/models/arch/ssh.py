"""The SSH context module (3x3 / 5x5 / 7x7 branches by stacked 3x3 convs), plain or deformable (DCNv2),
one per level: its cost and how a checkpoint shows it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from featherface_tune.models.arch.block import Block, Polynomial, Shapes, need, ssh_width
from featherface_tune.models.arch.cost import Parts, Priced, priced

KEYS = ("ssh1", "ssh2", "ssh3")


def dcn_offset_macs(cin: int, hw: int) -> int:
    """MACs of a deformable conv's offset (18 ch) and modulator (9 ch) 3x3 convs."""
    return 27 * 9 * cin * hw


def dcn_sampling_macs(cin: int, hw: int) -> int:
    """Bilinear sampling: 4 multiply-adds per sampled value, cin x 9 values per output position."""
    return 4 * cin * 9 * hw


@lru_cache(maxsize=65536)
def price_ssh(cin: int, cout: int, deformable: bool, hw: int) -> Priced:
    """Five 3x3 conv + BN units (cin->cout/2, cin->q, then three q->q, with q = cout/4); with DCN, each
    unit adds its offset (18 ch) and modulator (9 ch) convs: 243 weights per input channel + 27
    biases, and their MACs. Parts: five BatchNorms, two LeakyReLUs (q each), the closing F.relu; with
    DCN, the main convs' weights and MACs, the offset/modulator convs' MACs and biases, and the
    bilinear sampling (outside the cost)."""
    # written out rather than as five `cost.conv` + `cost.bn` calls: a search meets many SSH widths (the
    # formulas are those of `cost.conv_bn_cost`)
    q = cout // 4
    main = 9 * (cin * (cout // 2) + cin * q + 3 * q * q)
    bn = cout // 2 + 4 * q
    per_pos = main + 2 * bn  # weights + BN: every parameter is one MAC per position
    if not deformable:
        return priced(per_pos, per_pos * hw,
                      Parts(bn_params=2 * bn, bn_macs=2 * bn * hw, leaky_elems=2 * q * hw, relu_call_elems=cout * hw))
    ins = 2 * cin + 3 * q  # the five convs read cin, cin, q, q, q channels
    offset = dcn_offset_macs(ins, hw)
    # one Parts, built once (a search prices thousands of new widths: `_replace` would build it twice)
    parts = Parts(bn_params=2 * bn, bn_macs=2 * bn * hw, bias_macs=5 * 27 * hw, dcn_params=main, dcn_macs=main * hw,
                  dcn_aux_macs=offset, leaky_elems=2 * q * hw, relu_call_elems=cout * hw,
                  dcn_sampling_macs=dcn_sampling_macs(ins, hw))
    return priced(per_pos + 243 * ins + 5 * 27, per_pos * hw + offset, parts)


def infer_ssh(shapes: Shapes, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Deformable when the first unit has an offset conv; each level's width is twice its 3x3 branch."""
    deformable = "ssh1.conv3X3.0.offset_conv.weight" in shapes
    conv = "0.regular_conv.weight" if deformable else "0.weight"
    widths = tuple(2 * need(shapes, f"{k}.conv3X3.{conv}", f"the SSH{i + 1} width")[0] for i, k in enumerate(KEYS))
    return {"ssh_deformable": deformable, "ssh_channels": widths}


BLOCK = Block(
    "ssh", "ssh", "level", "featherface_tune.models.blocks.ssh:SSH", KEYS,
    args=lambda f, i: (f["neck_channels"], ssh_width(f, i), f["ssh_deformable"]),
    reads=("neck_channels", "ssh_channels", "ssh_deformable"), price=price_ssh, term="level", infer=infer_ssh,
    affine_in="neck_channels", polynomial=Polynomial("ssh_channels", 2, period=4))
