"""The FeatherFace architecture, described once (torch-free).

`BLOCKS` lists the block types in forward order; each `Block` (see `block.py`) carries its instances
for a config, its module (by import path), its price and how a checkpoint shows it. Every tool walks
this list and nothing else restates the topology:

* `featherface_tune.models.builder` builds each present block's modules and applies them by role;
* `featherface_tune.counter.analytic` prices every instance (`priced_groups`), or sums them per group
  in the true convention, memoised by the fields each group reads (`true_groups`);
* `featherface_tune.models.checkpoint` infers a config from a state dict (`infer_fields`);
* `featherface_tune.tuner.solve` sums the costs by search term (`term_blocks`, `block_price`).

A new block type is a module in `models/blocks/`, a `Block` in this package, its config fields (a
dataclass field and one `models.config.FIELDS` entry each: validation, the search space and the solver
read that table), and one entry below. Optionally, the shape of its price in a width (`affine_in`,
`polynomial`; tests/models/test_arch.py checks every such claim) lets the counter serve new values of
that width without pricing them.
"""

from __future__ import annotations

from functools import lru_cache
from operator import itemgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from featherface_tune.errors import ConfigError
from featherface_tune.models.arch import backbone, bifpn, cbam, fpn, heads, shuffle, ssh
from featherface_tune.models.arch.block import (LEVELS, ROLES, TERMS, Block, Fields, Instance, Polynomial, Shapes,
                                                Sizes)
from featherface_tune.models.arch.cost import Cost, Parts, Priced
from featherface_tune.models.config import FIELDS

if TYPE_CHECKING:
    from featherface_tune.models.config import FeatherFaceConfig

__all__ = ["BLOCKS", "GROUPS", "LEVELS", "NO_SIZE", "ROLES", "TERMS", "Block", "Cost", "Fields", "Instance", "Parts",
           "Polynomial", "Priced", "Sizes", "block_price", "get_block", "fields_of", "infer_fields", "key_groups", "layout",
           "priced_groups", "sizes", "term_blocks", "term_price", "term_reads", "true_groups"]

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
_PER_LEVEL_FIELDS = frozenset(f.name for f in FIELDS if f.per_level)  # one value per level, or one for all
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


TrueGroups = tuple[tuple[tuple[int, int], ...], int, int]  # (params, MACs) per group; DCN offset, sampling MACs
# a group's memo entry: its params, MACs, DCN offset MACs and DCN sampling MACs (for an `affine_in` group:
# those at 0, then their change per unit of the field)
Sums = tuple[int, ...]
_MEMO_SIZE = 1 << 14  # entries per memo before it starts over (bounded memory)


def true_groups(cfg: "FeatherFaceConfig", h: int, w: int) -> TrueGroups:
    """`priced_groups` summed in the true convention: per breakdown group (GROUPS order) its
    (params, MACs), and the DCN offset/modulator and bilinear sampling MACs of the whole config. The
    same prices, without building per-instance records a plain count does not return: each group's
    sums are memoised by the values of the fields its blocks read (per level, when its blocks are
    per-level: the level's own value of a per-level field; but the field its prices are affine in,
    `Block.affine_in`), so a new config whose groups were met before costs a lookup per group (per
    level). A miss in a group whose prices are a polynomial in a field (`Block.polynomial`) is
    filled from that polynomial, kept by the values of the other fields: a search meets a new neck
    or SSH width on most of its first configs, and few new settings of the rest."""
    f = fields_of(cfg)
    out = []
    offset = sampling = 0
    for rest_of, levels_of, affine, seen, fill in _tallies(h, w):
        rest = rest_of(f)
        if levels_of is None:  # a group summed whole: one lookup
            s = seen.get(rest) or fill(seen, rest, f, None)
            if affine is not None:
                s = _at(s, f[affine])
            out.append((s[0], s[1]))
            offset += s[2]
            sampling += s[3]
            continue
        m0, m1, m2 = seen.get(rest) or _per_level_memos(seen, rest)
        k0, k1, k2 = levels_of(f)  # the three levels (LEVELS) written out: a third off the hit path
        s0 = m0.get(k0) or fill(m0, k0, f, 0)
        s1 = m1.get(k1) or fill(m1, k1, f, 1)
        s2 = m2.get(k2) or fill(m2, k2, f, 2)
        if affine is None:
            out.append((s0[0] + s1[0] + s2[0], s0[1] + s1[1] + s2[1]))
            offset += s0[2] + s1[2] + s2[2]
            sampling += s0[3] + s1[3] + s2[3]
        else:
            x = f[affine]
            out.append((s0[0] + s1[0] + s2[0] + x * (s0[4] + s1[4] + s2[4]),
                        s0[1] + s1[1] + s2[1] + x * (s0[5] + s1[5] + s2[5])))
            offset += s0[2] + s1[2] + s2[2] + x * (s0[6] + s1[6] + s2[6])
            sampling += s0[3] + s1[3] + s2[3] + x * (s0[7] + s1[7] + s2[7])
    return tuple(out), offset, sampling


_Fill = Callable[[dict[Any, Sums], Any, Fields, "int | None"], Sums]


def _per_level_memos(seen: dict[Any, Any], rest: Any) -> tuple[dict[Any, Sums], ...]:
    """A per-level group's memos for the values `rest` of the fields it reads but per-level ones: one
    per level, keyed by the level's values of those (hashing `rest` once per config, not per level)."""
    if len(seen) >= _MEMO_SIZE:
        seen.clear()
    memos: tuple[dict[Any, Sums], ...] = tuple({} for _ in LEVELS)
    seen[rest] = memos
    return memos


def _at(s: Sums, x: int) -> Sums:
    """An affine group's memo entry (sums at 0, change per unit) at `x` units."""
    half = len(s) // 2
    return tuple(a + x * b for a, b in zip(s[:half], s[half:]))


# a group's memo holds Sums by key, or (a per-level group's) its per-level memos by the other values
_Tally = tuple[Callable[[Fields], Any], Callable[[Fields], tuple[Any, ...]] | None, str | None, dict[Any, Any], _Fill]


@lru_cache(maxsize=16)  # input sizes: a search counts at one
def _tallies(h: int, w: int) -> tuple[_Tally, ...]:
    """Per breakdown group (GROUPS order), what `true_groups` reads: a getter of the values of the
    fields its blocks read but the per-level ones (for a per-level group) and the one its prices are
    affine in; a function giving each level's values of the per-level fields (None: the group is
    summed whole); the affine field (None: none); its memo at this input size; and the function that
    sums the group's prices into a memo on a miss."""
    at = sizes(h, w)
    out: list[_Tally] = []
    for g in GROUPS:
        blocks = tuple(b for b in BLOCKS if b.group == g)
        affine = blocks[0].affine_in if all(b.affine_in == blocks[0].affine_in for b in blocks) else None
        reads = tuple(dict.fromkeys(k for b in blocks for k in b.reads if k != affine))
        per_level = tuple(k for k in reads if k in _PER_LEVEL_FIELDS) if all(b.per_level for b in blocks) else ()
        rest = tuple(k for k in reads if k not in per_level)
        rest_of: Callable[[Fields], Any] = itemgetter(*rest) if rest else (lambda f: ())
        out.append((rest_of, _level_values(per_level) if per_level else None, affine, {},
                    _filler(blocks, at, affine, bool(per_level))))
    return tuple(out)


def _level_values(names: tuple[str, ...]) -> Callable[[Fields], tuple[Any, ...]]:
    """A function taking fields to each level's values of the per-level fields `names` (such a field
    holds one value for every level, or one per level)."""
    n = len(LEVELS)

    def one(v: Any) -> tuple[Any, ...]:
        return v if type(v) is tuple else (v,) * n

    if len(names) > 1:
        return lambda f: tuple(zip(*(one(f[k]) for k in names)))
    name = names[0]

    def levels(f: Fields) -> tuple[Any, ...]:  # the common case, one call per group and config
        v = f[name]
        return v if type(v) is tuple else (v,) * n

    return levels


def _filler(blocks: tuple[Block, ...], at: Sizes, affine: str | None, per_level: bool) -> _Fill:
    """The function that computes a group's memo entry on a miss (at a level, for a `per_level`
    group) and stores it under a key: its summed prices; for a group affine in a field, at 0 and the
    change per unit. For a group whose blocks declare one `Polynomial`, from that polynomial's forward
    differences, memoised by the values of the group's other fields and the class of the field."""
    def sums(f: Fields, level: int | None) -> list[int]:
        params = macs = offset = sampling = 0
        for b in blocks:
            if b.present(f):
                for (p, m), parts in block_price(b, f, at, level, cached=False):
                    params, macs = params + p, macs + m
                    offset, sampling = offset + parts.dcn_aux_macs, sampling + parts.dcn_sampling_macs
        return [params, macs, offset, sampling]

    def entry(f: Fields, level: int | None) -> list[int]:
        if affine is None:
            return sums(f, level)
        s0, s1 = sums({**f, affine: 0}, level), sums({**f, affine: 1}, level)
        return s0 + [b - a for a, b in zip(s0, s1)]

    def store(seen: dict[Any, Sums], key: Any, s: Sums) -> Sums:
        if len(seen) >= _MEMO_SIZE:
            seen.clear()
        seen[key] = s
        return s

    poly = blocks[0].polynomial
    if (poly is None or any(b.polynomial != poly for b in blocks) or poly.period in _PER_LEVEL_FIELDS
            or (poly.field in _PER_LEVEL_FIELDS and not per_level)):  # none, or none this memo can use
        return lambda seen, key, f, level: store(seen, key, tuple(entry(f, level)))
    field, degree, period = poly
    rest = tuple(k for k in dict.fromkeys(k for b in blocks for k in b.reads) if k not in (field, affine))
    others: Callable[[Fields], Any] = itemgetter(*rest) if rest else (lambda f: ())
    differences: tuple[dict[Any, list[list[int]]], ...] = tuple({} for _ in LEVELS)  # per level (one: whole)

    def from_polynomial(seen: dict[Any, Sums], key: Any, f: Fields, level: int | None) -> Sums:
        x = f[field]
        if type(x) is tuple:  # a per-level field: this level's value
            x = x[level]  # type: ignore[index]
        step = period if type(period) is int else f[period]  # type: ignore[index]
        k, base = divmod(x, step)
        memo = differences[level or 0]
        dkey = (others(f), base)
        rows = memo.get(dkey)
        if rows is None:  # the class's first value: priced (the polynomial costs degree + 1 entries)
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[dkey] = _MET_ONCE
            s = tuple(entry(f, level))
        elif rows is _MET_ONCE:  # its second: the entries at base + step, + 2 step, ..., and their differences
            at_node = dict(f)
            rows = []
            for j in range(1, degree + 2):
                at_node[field] = base + j * step
                rows.append(entry(at_node, level))
            for i in range(1, degree + 1):
                for j in range(degree, i - 1, -1):
                    rows[j] = [b - a for a, b in zip(rows[j - 1], rows[j])]
            memo[dkey] = rows
            s = _newton(rows, k - 1)
        else:
            s = _newton(rows, k - 1)
        return store(seen, key, s)

    return from_polynomial


_MET_ONCE: list[list[int]] = []  # a residue class met once: no forward differences kept yet


def _newton(rows: list[list[int]], k: int) -> Sums:
    """Newton's forward formula: the value k steps past the first node of the polynomial whose
    forward differences there are `rows` (exact in ints: C(k, i) is)."""
    if len(rows) == 3:  # degree 2, the common case, written out
        c2 = k * (k - 1) // 2
        return tuple([a + k * b + c2 * c for a, b, c in zip(*rows)])
    out, c = rows[0], 1
    for i in range(1, len(rows)):
        c = c * (k - i + 1) // i
        out = [a + c * b for a, b in zip(out, rows[i])]
    return tuple(out)


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


def block_price(b: Block, fields: Fields, at: Sizes, level: int | None = None, cached: bool = True) -> list[Priced]:
    """The prices of a (present) block's instances for these fields: all of them, or the one at
    `level`. The same instances as `Block.instances`, without building the records: a search prices
    thousands of new configs. `cached=False` bypasses the price's own memo (for a caller that
    memoises the sums: keeping each price as well would cost more than computing it)."""
    price, args = (b.price if cached else b.uncached_price), b.args
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
