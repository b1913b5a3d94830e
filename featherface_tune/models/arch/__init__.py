"""The FeatherFace architecture, described once (torch-free).

`BLOCKS` lists the block types in forward order; each `Block` (see `block.py`) carries its instances
for a config, its module (by import path), its price and how a checkpoint shows it. Every tool walks
this list and nothing else restates the topology:

* `featherface_tune.models.builder` builds each present block's modules and applies them by role;
* `featherface_tune.counter.analytic` prices every instance (`priced_groups`);
* `featherface_tune.models.checkpoint` infers a config from a state dict (`infer_fields`);
* `featherface_tune.tuner.solve` sums the costs by search term (`term_blocks`, `block_price`).

A new block type is a module in `models/blocks/`, a `Block` in this package, its config fields (a
dataclass field and one `models.config.FIELDS` entry each: validation, the search space and the solver
read that table), and one entry below.
"""

from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from featherface_tune.errors import ConfigError
from featherface_tune.models.arch import backbone, bifpn, cbam, fpn, heads, shuffle, ssh
from featherface_tune.models.arch.block import LEVELS, ROLES, TERMS, Block, Fields, Instance, Shapes, Sizes
from featherface_tune.models.arch.cost import Cost, Parts, Priced

if TYPE_CHECKING:
    from featherface_tune.models.config import FeatherFaceConfig

__all__ = ["BLOCKS", "GROUPS", "LEVELS", "NO_SIZE", "ROLES", "TERMS", "Block", "Cost", "Fields", "Instance", "Parts",
           "Priced", "Sizes", "block_price", "get_block", "fields_of", "infer_fields", "key_groups", "layout",
           "priced_groups", "sizes", "term_blocks", "term_price", "term_reads"]

BLOCKS: tuple[Block, ...] = (backbone.BLOCK, cbam.BACKBONE_BLOCK, bifpn.BLOCK, fpn.BLOCK, cbam.NECK_BLOCK,
                             ssh.BLOCK, shuffle.BLOCK, *heads.BLOCKS)


def _registry(blocks: tuple[Block, ...]) -> dict[str, Block]:
    out: dict[str, Block] = {}
    for b in blocks:
        if b.name in out:
            raise ValueError(f"block {b.name!r} is described twice")
        out[b.name] = b
    return out


_BY_NAME = _registry(BLOCKS)
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(b.group for b in BLOCKS))  # breakdown groups, forward order


def get_block(name: str) -> Block:
    """The block called `name` (KeyError names the known ones)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no block {name!r}; blocks: {', '.join(_BY_NAME)}") from None


@lru_cache(maxsize=1024)
def sizes(h: int, w: int) -> Sizes:
    """The input size h x w and its levels' sizes (ConfigError when not positive)."""
    if h < 1 or w < 1:
        raise ConfigError(f"input size {h}x{w} must be positive")
    levels = backbone.level_sizes(h, w)
    return Sizes(h, w, levels, (levels[0][0] * levels[0][1], levels[1][0] * levels[1][1], levels[2][0] * levels[2][1]))


NO_SIZE = Sizes(0, 0, ((0, 0), (0, 0), (0, 0)), (0, 0, 0))  # for parameters alone: every MAC term is 0


def fields_of(cfg: "FeatherFaceConfig") -> Fields:
    """A config's fields by name: what the blocks' functions read."""
    return cfg.__dict__


@lru_cache(maxsize=4096)
def layout(cfg: "FeatherFaceConfig") -> tuple[tuple[Block, tuple[Instance, ...]], ...]:
    """The blocks a config has, in forward order, each with its instances."""
    f = fields_of(cfg)
    return tuple((b, b.instances(f)) for b in BLOCKS if b.present(f))


@lru_cache(maxsize=4096)
def priced_groups(cfg: "FeatherFaceConfig", h: int, w: int) -> Mapping[str, tuple[Priced, ...]]:
    """Per breakdown group (GROUPS order), the price of every instance in it at an h x w input
    (read-only: it is cached). Prices stay per instance: a convention's rules are linear, so
    `Convention.total` restates each and adds plain ints."""
    at, f = sizes(h, w), fields_of(cfg)
    found: dict[str, list[Priced]] = {g: [] for g in GROUPS}
    for b in BLOCKS:
        if b.present(f):
            found[b.group] += block_price(b, f, at)
    return MappingProxyType({g: tuple(p) for g, p in found.items()})


def term_blocks(term: str) -> tuple[Block, ...]:
    """The blocks whose cost belongs to search term `term`."""
    return _TERM_BLOCKS[term]


def term_reads(term: str) -> tuple[str, ...]:
    """The config fields the prices of a term's blocks depend on (a solver's cache key)."""
    return _TERM_READS[term]


def _index_terms() -> None:
    """The blocks by name, and which blocks and fields each search term has: computed from BLOCKS once
    (the solver asks in its inner loops), and again by `clear_caches`."""
    global _BY_NAME, _TERM_BLOCKS, _TERM_READS
    _BY_NAME = _registry(BLOCKS)
    _TERM_BLOCKS = {t: tuple(b for b in BLOCKS if b.term == t) for t in TERMS}
    _TERM_READS = {t: tuple(dict.fromkeys(k for b in _TERM_BLOCKS[t] for k in b.reads)) for t in TERMS}


_TERM_BLOCKS: dict[str, tuple[Block, ...]] = {}
_TERM_READS: dict[str, tuple[str, ...]] = {}
_index_terms()


def term_price(fields: Fields, term: str, at: Sizes) -> list[Priced]:
    """The prices of the instances of term `term`'s blocks, for config fields (a config's, or a
    solver's assignment of the fields the term reads)."""
    return [p for b in _TERM_BLOCKS[term] if b.present(fields) for p in block_price(b, fields, at)]


def block_price(b: Block, fields: Fields, at: Sizes, level: int | None = None) -> list[Priced]:
    """The prices of a (present) block's instances for these fields: all of them, or the one at
    `level`. The same instances as `Block.instances`, without building the records: a search prices
    thousands of new configs."""
    price, args = b.price, b.args
    if not b.per_level:
        return [price(*args(fields, None), at)]
    hws = at.hws
    if level is not None:
        return [price(*args(fields, level), hws[level])]
    return [price(*args(fields, i), hws[i]) for i in _LEVEL_INDICES]


_LEVEL_INDICES = tuple(range(len(LEVELS)))


def infer_fields(shapes: Shapes, hints: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Config fields read off a state dict's key shapes, block by block in forward order (a block
    sees what the earlier ones found); `hints` supply what weights cannot show (e.g. `shuffle`)."""
    fields: dict[str, Any] = dict(hints or {})
    for b in BLOCKS:
        if b.infer is not None:
            fields.update(b.infer(shapes, fields))
    return fields


def key_groups(cfg: "FeatherFaceConfig") -> dict[str, str]:
    """Top-level model attribute -> breakdown group, for a config's model."""
    return {i.key.split(".", 1)[0]: b.group for b, insts in layout(cfg) for i in insts}


def clear_caches() -> None:
    """Forget every memoised price and layout (for cold-start timing, or after BLOCKS changed): the
    memoised functions of every module a block's price comes from, and this module's."""
    import sys

    modules = {sys.modules[__name__]} | {sys.modules[b.price.__module__] for b in BLOCKS}
    for module in modules:
        for f in list(vars(module).values()):
            if callable(getattr(f, "cache_clear", None)):
                f.cache_clear()
    _index_terms()
