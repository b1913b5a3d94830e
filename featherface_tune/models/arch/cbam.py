"""CBAM (channel gate, then spatial gate) after the backbone and after the neck, applied as
`relu(cbam(x) + x)` per level: its cost and how a checkpoint shows it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping, Sequence

from featherface_tune.errors import ConfigError
from featherface_tune.models.arch.block import Block, Polynomial, Shapes, need
from featherface_tune.models.arch.cost import Parts, Priced, priced
from featherface_tune.models.config import backbone_channels

MODULE = "featherface_tune.models.blocks.cbam:CBAM"


@lru_cache(maxsize=8192)
def price_cbam(channels: int, reduction: int, hw: int) -> Priced:
    """The MLP c->m->c with biases runs twice (avg- and max-pooled vectors); the 7x7 conv 2->1 (98
    weights) + BatchNorm(1) (2 params) once per position; pooling and the gating multiply are free.
    Parts: the spatial BatchNorm; the MLP's biases and ReLU, run twice; the pooling calls; the residual
    ReLU module the official code applies after it."""
    m = channels // reduction  # written out (as the BiFPN's price): the neck CBAM misses with each new neck width
    return priced(2 * channels * m + m + channels + 100, 4 * channels * m + 100 * hw, Parts(bn_params=2, bn_macs=2 * hw, bias_macs=2 * (m + channels),
                              relu_module_elems=2 * m + channels * hw, pool_call_in=2 * channels * hw))


def _reduction(channels: Sequence[int], hidden: Sequence[int], name: str) -> int:
    """The CBAM reduction r with channels[i] // r == hidden[i] at every level (prefer 16, then 8,
    then channels[0] // hidden[0], then the smallest). Every such r builds the same network."""
    ok = [r for r in range(1, max(channels) + 1) if all(c // r == h for c, h in zip(channels, hidden))]
    if not ok:
        raise ConfigError(f"cannot infer {name}: CBAM hidden widths {list(hidden)} fit no common "
                          f"reduction of widths {list(channels)}")
    for pref in (16, 8, channels[0] // max(hidden[0], 1)):
        if pref in ok:
            return pref
    return ok[0]


def _inferrer(switch: str, ratio: str, keys: Sequence[str], what: str, widths: Any):  # type: ignore[no-untyped-def]
    def infer(shapes: Shapes, fields: Mapping[str, Any]) -> dict[str, Any]:
        if f"{keys[0]}.ChannelGate.mlp.1.weight" not in shapes:
            return {switch: False}
        hidden = [need(shapes, f"{k}.ChannelGate.mlp.1.weight", what)[0] for k in keys]
        return {switch: True, ratio: _reduction(widths(fields), hidden, ratio)}
    return infer


# the official code's attribute names, misspelling included (its checkpoints load by them)
BACKBONE_KEYS = ("bacbkbone_0_cbam", "bacbkbone_1_cbam", "bacbkbone_2_cbam")
NECK_KEYS = ("bif_cbam_0", "bif_cbam_1", "bif_cbam_2")


def _backbone_widths(fields: Mapping[str, Any]) -> tuple[int, int, int]:
    return backbone_channels(fields["backbone_width"])


BACKBONE_BLOCK = Block(
    "backbone_cbam", "backbone_cbam", "residual", MODULE, BACKBONE_KEYS,
    args=lambda f, i: (_backbone_widths(f)[i], f["backbone_cbam_reduction"]),  # type: ignore[index]
    reads=("backbone_cbam", "backbone_width", "backbone_cbam_reduction"), price=price_cbam,
    term="backbone_cbam_reduction", present=lambda f: f["backbone_cbam"],
    infer=_inferrer("backbone_cbam", "backbone_cbam_reduction", BACKBONE_KEYS, "backbone CBAM", _backbone_widths))

NECK_BLOCK = Block(
    "neck_cbam", "neck_cbam", "residual", MODULE, NECK_KEYS,
    args=lambda f, _: (f["neck_channels"], f["neck_cbam_reduction"]),
    reads=("neck_cbam", "neck_channels", "neck_cbam_reduction"), price=price_cbam,
    term="neck_cbam_reduction", present=lambda f: f["neck_cbam"],
    infer=_inferrer("neck_cbam", "neck_cbam_reduction", NECK_KEYS, "neck CBAM",
                    lambda f: (f["neck_channels"],) * 3),
    polynomial=Polynomial("neck_channels", 2, period="neck_cbam_reduction"))
