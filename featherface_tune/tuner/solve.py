"""Landing on the budget by construction, and proving what the space can reach.

The parameter count is a sum of terms, each depending on few knobs:

    params = base(structure) + level(s_P3) + level(s_P4) + level(s_P5) + cbam_b(r_b) + cbam_n(r_n)

the architecture's search terms (`featherface_tune.models.arch.TERMS`: each block names the term its
cost belongs to): `level(s)` is the price of one level's blocks of the "level" term (SSH, shuffle,
heads) at width s (its parameters do not depend on the level; its MACs do), `cbam_*` the blocks of a
ratio's term at that ratio, and `base` the blocks of the "base" term (backbone, neck) - all given the
*structure* (the non-budget knobs). MACs split the same way. So:

* `prove` runs these sums over *every* structure of the space (sorted sums of the three SSH tables +
  binary search), which proves whether any config of the space lies within the window, how many do,
  the nearest achievable counts on either side (each with a witness config) - and, when the window
  holds at most `MAX_EXACT` configs, lists every one of them with its MACs (`ExactSet`).
* `Repairer.repair` projects a sampled point (every knob sampled by Optuna) onto the exact config
  nearest to it under `distance` (MACs break ties): over the `ExactSet` when there is one, else
  structure by structure in order of a lower bound (`_nearest_by_structure`).

The per-term costs come from the same block prices as `featherface_tune.counter.analytic`;
each solution is re-counted with `count()` by the caller, and tests check the split on random configs.
Params and MACs are counted in `counting`, a `featherface_tune.counter.conventions.Convention` (the
true count, `TRUE`, by default; e.g. `get_convention("thop")` counts what thop reports on the official
code, so a search lands on the paper's figure; `get_convention("numel", "dense")` leaves the DCN offset
and modulator convs out of MACs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from featherface_tune.counter.conventions import TRUE, Convention, countable
from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.arch import (
    NO_SIZE, Sizes, block_price, fields_of, get_block, sizes, term_blocks, term_price, term_reads,
)
from featherface_tune.models.config import DEFAULT_INPUT, FeatherFaceConfig
from featherface_tune.tuner.records import window_text
from featherface_tune.tuner.space import (  # the distance between knob assignments lives with the knobs
    BUDGET_COLS, BUDGET_KNOBS, CONTEXT, RATIO_COLS, RATIO_KNOBS, SSH_KNOBS, STRUCTURE_KNOBS, SWITCH_COST, Domain,
    SearchSpace, applies, config_from_knobs, distance_terms, encode, inactive_value, knobs_from_config, switched_on,
)

MAX_CERTIFY_STRUCTURES = 250_000
MAX_EXACT = 250_000  # exact configs listed explicitly (about 200 bytes each: 50 MB); above it the search samples
MAX_PROOF_BYTES = 512 * 2**20  # memory the sorted SSH sums of one structure may take


class NoConfigInWindow(InputError):
    """The space provably holds no config within the window (message names the nearest ones)."""

    exit_code = 1


@dataclass(frozen=True)
class Table:
    """One budget knob's valid values and their (params, MACs) contribution, given a structure."""

    knob: str
    values: tuple[Any, ...]
    params: np.ndarray
    macs: np.ndarray


def check_memory(space: SearchSpace) -> None:
    """A one-line ConfigError when the space's SSH domains would make numpy ask for too much memory
    (the sorted sums of P3 x P4 x P5 widths: 24 bytes per combination while proving)."""
    n3, n4, n5 = (len(space.domain(k).values) for k in SSH_KNOBS)
    combos = n3 * n4 * n5
    need = combos * 24
    if need > MAX_PROOF_BYTES:
        raise ConfigError(f"space: the SSH widths give {combos:,} P3 x P4 x P5 combinations ({n3} x {n4} x {n5}); "
                          f"proving the space would take about {need / 2**20:,.0f} MiB (at most "
                          f"{MAX_PROOF_BYTES / 2**20:,.0f} MiB); narrow ssh_channels or take a larger step")


# ---- per-term tables (cached by exactly the knobs each term depends on) ----------------------

def _probe(**changes: Any) -> FeatherFaceConfig | None:
    try:
        return FeatherFaceConfig(**changes)
    except ConfigError:
        return None


@lru_cache(maxsize=1024)
def _valid_ssh(values: tuple[int, ...], shuffle: str, groups: int) -> tuple[int, ...]:
    """SSH widths that break no rule with this shuffle (checked by the config's own validation)."""
    return tuple(s for s in values
                 if _probe(ssh_channels=s, shuffle=shuffle, shuffle_groups=groups,
                           backbone_cbam=False, neck_cbam=False) is not None)


@lru_cache(maxsize=16384)
def _block_table(name: str, knob: str, values: tuple[Any, ...], fixed: tuple[tuple[str, Any], ...], at: Sizes,
                 level: int | None, counting: Convention) -> tuple[np.ndarray, np.ndarray]:
    """(params, MACs) of one block at each value of `knob` (its instance at `level`, or all), the other
    fields it reads held at `fixed`: cached by exactly what the block reads."""
    b = get_block(name)
    fields = dict(fixed)
    pm = []
    for v in values:
        fields[knob] = v
        pm.append(counting.total(block_price(b, fields, at, level)) if b.present(fields) else (0, 0))
    return (np.array([p for p, _ in pm], dtype=np.int64).reshape(-1),
            np.array([m for _, m in pm], dtype=np.int64).reshape(-1))


@lru_cache(maxsize=16384)
def _term_table(term: str, knob: str, values: tuple[Any, ...], fixed: tuple[Any, ...], at: Sizes,
                level: int | None, counting: Convention) -> tuple[np.ndarray, np.ndarray]:
    """(params, MACs) of a search term's blocks at each value of `knob`, the other fields the term
    reads held at `fixed` (values in `_held(term, knob)` order): the sum of the blocks' tables."""
    held = dict(zip(_held(term, knob), fixed))
    params, macs = np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=np.int64)
    for b in term_blocks(term):
        p, m = _block_table(b.name, knob, values, tuple((k, held[k]) for k in b.reads if k != knob), at, level,
                            counting)
        params, macs = params + p, macs + m
    return params, macs


@lru_cache(maxsize=None)
def _held(term: str, knob: str) -> tuple[str, ...]:
    """The fields a term's prices read, but `knob` (the one its table varies)."""
    return tuple(k for k in term_reads(term) if k != knob)


@lru_cache(maxsize=None)
def _held_values(term: str, knob: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function taking a structure to its values of `_held(term, knob)` (a C itemgetter: it runs
    once per structure and table)."""
    keys = _held(term, knob)
    get = itemgetter(*keys)
    return (lambda s: (get(s),)) if len(keys) == 1 else get  # type: ignore[return-value]


def _ratio_probe(knob: str, width: float | int, r: int) -> FeatherFaceConfig | None:
    """The smallest config with this CBAM on at ratio `r` (None when the ratio breaks a rule)."""
    if knob == "backbone_cbam_reduction":
        return _probe(backbone_width=float(width), backbone_cbam=True, backbone_cbam_reduction=r, neck_cbam=False,
                      shuffle="none")
    return _probe(neck_channels=int(width), neck_cbam=True, neck_cbam_reduction=r, backbone_cbam=False,
                  shuffle="none")


@lru_cache(maxsize=4096)
def _valid_ratios(values: tuple[int, ...], knob: str, width: float | int) -> tuple[int, ...]:
    """The ratios that break no rule at this width (checked by the config's own validation)."""
    return tuple(r for r in values if _ratio_probe(knob, width, r) is not None)


@lru_cache(maxsize=8192)
def _base(bw: float, neck: str, reps: int, n: int, h: int, w: int, counting: Convention = TRUE
          ) -> tuple[int, int] | None:
    """(params, MACs) of the "base"-term blocks (backbone, neck) of a structure (None when it breaks
    a rule, or the convention cannot count it)."""
    probe = _probe(backbone_width=bw, neck=neck, bifpn_repeats=reps, neck_channels=n,
                   backbone_cbam=False, neck_cbam=False, ssh_channels=4, ssh_deformable=False,
                   shuffle="none", anchors_per_cell=1, landmarks=False)
    if probe is None:
        return None
    try:
        countable(counting, probe)  # e.g. thop counts only the official backbone width
    except ConfigError:
        return None
    return counting.total(term_price(fields_of(probe), "base", sizes(h, w)))


def budget_tables(space: SearchSpace, s: Mapping[str, Any], h: int, w: int,
                  domains: Mapping[str, tuple[Any, ...]] | None = None,
                  params_only: bool = False, counting: Convention = TRUE) -> list[Table]:
    """Tables for the five budget knobs given structure `s` (domains default to the space's);
    values that break a rule in this structure are left out. `params_only`: MACs left at 0;
    `counting`: how params and MACs are counted (see `count`)."""
    at = NO_SIZE if params_only else sizes(h, w)
    doms = {k: (tuple(domains[k]) if domains and k in domains else space.domain(k).values)
            for k in BUDGET_KNOBS}
    out = []
    level = _held_values("level", "ssh_channels")(s)
    for i, k in enumerate(SSH_KNOBS):
        vals = _valid_ssh(doms[k], s["shuffle"], s["shuffle_groups"])
        p, m = _term_table("level", "ssh_channels", vals, level, at, i, counting)
        out.append(Table(k, vals, p, m))
    widths = {"backbone_cbam_reduction": float(s["backbone_width"]), "neck_cbam_reduction": s["neck_channels"]}
    for knob in RATIO_KNOBS:
        if not applies(knob, s):  # its CBAM is off: one inactive value that costs nothing
            zero = np.zeros(1, dtype=np.int64)
            out.append(Table(knob, (inactive_value(knob, s, Domain(doms[knob])),), zero, zero))
            continue
        vals = _valid_ratios(doms[knob], knob, widths[knob])
        p, m = _term_table(knob, knob, vals, _held_values(knob, knob)(s), at, None, counting)
        out.append(Table(knob, vals, p, m))
    return out


def base_cost(s: Mapping[str, Any], tables: list[Table], h: int, w: int, counting: Convention = TRUE
              ) -> tuple[int, int] | None:
    """(params, MACs) of everything but the budget terms; None if the structure has no valid config."""
    if any(len(t.values) == 0 for t in tables):
        return None
    return _base(float(s["backbone_width"]), s["neck"], s["bifpn_repeats"], s["neck_channels"], h, w, counting)


@dataclass(frozen=True)
class Solution:
    """The exact config a sampled point was repaired to, with its predicted counts."""

    knobs: Mapping[str, Any]
    params: int
    macs: int
    switches: int  # switch knobs changed from the sampled point
    width: float  # sum of the width terms to the sampled point
    candidates: int  # exact configs (or in-window completions) compared
    method: str  # "exact set" or "by structure"

    @property
    def distance(self) -> float:
        return self.switches * SWITCH_COST + self.width

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "candidates": self.candidates, "switches": self.switches,
                "width": round(self.width, 6), "distance": round(self.distance, 6)}


def _pick(total: np.ndarray, macs: np.ndarray) -> int:
    """Index of the smallest total, fewest MACs among ties."""
    near = np.flatnonzero(total <= total.min() + 1e-9)
    return int(near[np.argmin(macs[near])])


def _nearest_combo(tables: list[Table], base_params: int, want: int) -> tuple[int, tuple[int, ...]]:
    """(|params - want|, grid index) of the combination of the tables' values (P3, P4, P5, backbone
    ratio, neck ratio) whose params are nearest `want` (the first such). Never materialises the whole
    grid: per ratio pair, the P3 x P4 sums (memory n3 * n4, within `check_memory`'s bound on
    n3 * n4 * n5) and a binary search in the sorted P5 table."""
    t3, t4, t5, tb, tn = tables
    o5 = np.argsort(t5.params, kind="stable")
    s5 = t5.params[o5]
    pair = (t3.params[:, None] + t4.params[None, :]).ravel()
    best: tuple[int, tuple[int, ...]] | None = None
    for ib in range(len(tb.values)):
        for i_n in range(len(tn.values)):
            need = want - base_params - int(tb.params[ib]) - int(tn.params[i_n]) - pair
            pos = np.searchsorted(s5, need)
            lo, hi = np.clip(pos - 1, 0, s5.size - 1), np.clip(pos, 0, s5.size - 1)
            d_lo, d_hi = np.abs(need - s5[lo]), np.abs(need - s5[hi])
            k = np.where(d_hi < d_lo, hi, lo)
            d = np.minimum(d_lo, d_hi)
            j = int(np.argmin(d))
            if best is None or int(d[j]) < best[0]:
                i3, i4 = divmod(j, len(t4.values))
                best = (int(d[j]), (i3, i4, int(o5[k[j]]), ib, i_n))
                if best[0] == 0:
                    return best
    assert best is not None
    return best


def _knobs_at(s: Mapping[str, Any], tables: list[Table], ix: tuple[Any, ...]) -> dict[str, Any]:
    """`s` completed with the tables' values at grid index `ix`."""
    knobs = dict(s)
    for t, i in zip(tables, ix):
        knobs[t.knob] = t.values[int(i)]
    return knobs


# ---- the exact set: every config within the window, listed -------------------------------------

@dataclass(frozen=True, eq=False)
class ExactSet:
    """Every config of a space within the window (under max_macs, if set), as arrays: structure
    `sid[i]` of `structures`, budget-knob values `budget[i]` (BUDGET_KNOBS order), params, MACs."""

    structures: tuple[Mapping[str, Any], ...]
    sid: np.ndarray
    budget: np.ndarray
    params: np.ndarray
    macs: np.ndarray
    counting: Convention  # how params and macs are counted

    def __post_init__(self) -> None:
        w, c = encode(self.structures)
        on = np.array([[applies(k, s) for k in RATIO_KNOBS] for s in self.structures],
                      dtype=bool).reshape(-1, len(RATIO_KNOBS))[self.sid]  # a ratio applies where its CBAM is on
        w, c = w[self.sid], c[self.sid]
        w[:, BUDGET_COLS] = self.budget
        w[:, RATIO_COLS] = np.where(on, w[:, RATIO_COLS], np.nan)
        object.__setattr__(self, "w", w)
        object.__setattr__(self, "c", c)

    def __len__(self) -> int:
        return int(self.sid.size)

    def knobs(self, i: int) -> dict[str, Any]:
        return {**self.structures[int(self.sid[i])], **{k: int(v) for k, v in zip(BUDGET_KNOBS, self.budget[i])}}

    def config(self, i: int) -> FeatherFaceConfig:
        return config_from_knobs(self.knobs(i))

    def concat(self, other: "ExactSet") -> "ExactSet":
        """This set and `other` (a chunk of the window) as one set."""
        return ExactSet(self.structures + other.structures,
                        np.concatenate([self.sid, other.sid + len(self.structures)]),
                        np.concatenate([self.budget, other.budget]), np.concatenate([self.params, other.params]),
                        np.concatenate([self.macs, other.macs]), self.counting)

    def subset(self, keep: np.ndarray) -> "ExactSet":
        return ExactSet(self.structures, self.sid[keep], self.budget[keep], self.params[keep], self.macs[keep],
                        self.counting)

    def compact(self) -> "ExactSet":
        """The same configs with only the structures they use."""
        used, local = np.unique(self.sid, return_inverse=True)
        return ExactSet(tuple(self.structures[int(i)] for i in used), local.astype(np.int64).reshape(-1),
                        self.budget, self.params, self.macs, self.counting)

    def distances(self, point: Mapping[str, Any], free: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(switches, width sum) of every config to `point`."""
        return distance_terms(self.w, self.c, point, free)  # type: ignore[attr-defined]

    def nearest(self, point: Mapping[str, Any], free: Sequence[str] = ()) -> Solution:
        sw, wd = self.distances(point, free)
        i = _pick(sw * SWITCH_COST + wd, self.macs)
        return Solution(self.knobs(i), int(self.params[i]), int(self.macs[i]), int(sw[i]), float(wd[i]),
                        len(self), "exact set")


# ---- the certificate: what the whole space can reach -------------------------------------------

@dataclass(frozen=True)
class Witness:
    params: int
    config: Mapping[str, Any]


@dataclass(frozen=True)
class Certificate:
    """Exhaustive facts about a space's parameter counts relative to a window."""

    target: int
    tolerance: int
    structures: int  # structure combinations enumerated
    configs: int  # valid configs counted (all budget-knob combinations of every structure)
    in_window: int  # configs within [target - tolerance, target + tolerance]
    smallest: Witness | None
    largest: Witness | None
    below: Witness | None  # largest count below the window
    above: Witness | None  # smallest count above the window
    example: Witness | None  # a config within the window
    seconds: float = 0.0
    complete: bool = True  # False if the space was too large to enumerate
    rule_example: str = ""  # a broken rule, when the space holds no valid config
    never_valid: tuple[tuple[str, Any], ...] = ()  # (knob, value) pairs no valid config of the space uses
    fixed_knobs: tuple[str, ...] = ()  # knobs with a single value in the space

    def evidence(self) -> str:
        return (f"exhaustive count over {self.configs:,} valid configs ({self.structures:,} structures x "
                f"every budget-knob combination) in {self.seconds:.1f} s")

    def to_json(self) -> dict[str, Any]:
        def wj(x: Witness | None) -> Any:
            return None if x is None else {"params": x.params, "config": dict(x.config)}
        return {"complete": self.complete, "structures": self.structures, "configs": self.configs,
                "in_window": self.in_window, "smallest": wj(self.smallest), "largest": wj(self.largest),
                "nearest_below": wj(self.below), "nearest_above": wj(self.above),
                "example": wj(self.example), "seconds": round(self.seconds, 3),
                "method": "sum of per-term parameter tables over every structure; sorted sums + binary search"}


@dataclass(frozen=True, eq=False)
class Proof:
    """What `prove` found: the certificate, the exact set (None when the window holds more than
    `max_exact` configs, or the space is too large), and the structures with a config in the window."""

    certificate: Certificate
    exact: ExactSet | None
    hit_structures: tuple[Mapping[str, Any], ...]
    least_macs: int | None = None  # fewest MACs in the window (before max_macs), when listed


def _sorted_sums(p3: np.ndarray, p4: np.ndarray, p5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted sums of one value from each table, flat P3 x P4 x P5 index of each sum)."""
    tri = (p3[:, None, None] + p4[None, :, None] + p5[None, None, :]).ravel()
    shift = max(1, int(tri.size - 1).bit_length())
    if tri.size and int(tri.min()) >= 0 and int(tri.max()) < (1 << (62 - shift)):
        # sort (sum, index) pairs packed into one int64: several times faster than argsort
        packed = np.sort((tri << shift) | np.arange(tri.size, dtype=np.int64))
        return packed >> shift, packed & ((1 << shift) - 1)
    order = np.argsort(tri, kind="stable")
    return tri[order], order


def _hit_bounds(sums: np.ndarray, rest: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """For each rest entry, the range [left, right) of sorted SSH sums that lands within [lo, hi]."""
    return (np.searchsorted(sums, lo - rest, side="left"), np.searchsorted(sums, hi - rest, side="right"))


def _expand(left: np.ndarray, right: np.ndarray, order: np.ndarray, a: int = 0, b: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(rest index, flat SSH index) of every hit of rest entries a..b (callers bound the count)."""
    left, right = left[a:b], right[a:b]
    cnt = right - left
    tot = int(cnt.sum())
    ri = np.repeat(np.arange(a, a + cnt.size), cnt)
    pos = np.repeat(left - (np.cumsum(cnt) - cnt), cnt) + np.arange(tot)
    return ri, order[pos]


def _find(space: SearchSpace, s: Mapping[str, Any], value: int, counting: Convention = TRUE) -> Witness:
    """A config of structure `s` with exactly `value` params (known to exist)."""
    tables = budget_tables(space, s, 32, 32, params_only=True, counting=counting)
    base = base_cost(s, tables, 32, 32, counting)
    assert base is not None
    dist, ix = _nearest_combo(tables, base[0], value)
    assert dist == 0, "witness search: the proof's count has no combination"
    return Witness(value, config_from_knobs(_knobs_at(s, tables, ix)).to_dict())


def certify(space: SearchSpace, target: int, tolerance: int,
            max_structures: int = MAX_CERTIFY_STRUCTURES) -> Certificate:
    """Enumerate every structure of the space and count the configs within the window."""
    return prove(space, target, tolerance, max_exact=0, max_structures=max_structures).certificate


def prove(space: SearchSpace, target: int, tolerance: int, *, input_size: tuple[int, int] = DEFAULT_INPUT,
          counting: Convention = TRUE, max_macs: int | None = None, max_exact: int = MAX_EXACT,
          max_structures: int = MAX_CERTIFY_STRUCTURES) -> Proof:
    """Enumerate every structure of the space, count the configs within the window and, when they are
    at most `max_exact`, list them with their MACs (params and MACs in `counting`, at `input_size`;
    only those under `max_macs` if set). The sorted sums live one group at a time (bounded by `check_memory`)."""
    check_memory(space)
    t0 = time.perf_counter()
    lo, hi = target - tolerance, target + tolerance
    # group the structures by their three SSH-level tables: each group shares one sorted sum array
    groups: dict[tuple[bytes, bytes, bytes], tuple[list[int], list[np.ndarray]]] = {}
    structs: list[dict[str, Any]] = []
    used: dict[str, set[Any]] = {k: set() for k in STRUCTURE_KNOBS + BUDGET_KNOBS}
    applying: set[str] = {k for k in STRUCTURE_KNOBS + BUDGET_KNOBS if k not in CONTEXT}  # + in context
    for s in space.iter_structures():
        if len(structs) >= max_structures:
            cert = Certificate(target, tolerance, len(structs), 0, 0, None, None, None, None, None,
                               time.perf_counter() - t0, complete=False)
            return Proof(cert, None, ())
        structs.append(s)
        tables = budget_tables(space, s, 32, 32, params_only=True, counting=counting)
        applying.update(k for k in CONTEXT if applies(k, s))
        base = base_cost(s, tables, 32, 32, counting)
        if base is None:
            continue
        tb, tn = tables[3], tables[4]
        rest = (tb.params[:, None] + tn.params[None, :]).ravel() + base[0]
        key = (tables[0].params.tobytes(), tables[1].params.tobytes(), tables[2].params.tobytes())
        g = groups.setdefault(key, ([], []))
        g[0].append(len(structs) - 1)
        g[1].append(rest)
        for k in STRUCTURE_KNOBS:
            used[k].add(s[k])
        for t in tables:
            if applies(t.knob, s):
                used[t.knob].update(t.values)
    n_cfg = n_win = 0
    hits_per = np.zeros(len(structs), dtype=np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (structure id, rest index, SSH index)
    collecting = max_exact > 0
    cands: dict[str, list[tuple[int, Mapping[str, Any]]]] = {k: [] for k in ("small", "large", "below", "above", "ex")}
    big = np.iinfo(np.int64)
    for key, (sids, rests) in groups.items():
        sums, order = _sorted_sums(*(np.frombuffer(x, dtype=np.int64) for x in key))
        sizes = np.array([r.size for r in rests])
        owner = np.repeat(np.arange(len(sids)), sizes)
        rest = np.concatenate(rests)
        n_cfg += sums.size * rest.size
        j = int(np.argmin(rest))
        cands["small"].append((int(rest[j] + sums[0]), structs[sids[owner[j]]]))
        j = int(np.argmax(rest))
        cands["large"].append((int(rest[j] + sums[-1]), structs[sids[owner[j]]]))
        left, right = _hit_bounds(sums, rest, lo, hi)
        n_here = int((right - left).sum())
        n_win += n_here
        if n_here:
            np.add.at(hits_per, np.asarray(sids)[owner], right - left)
            if not cands["ex"]:
                j = int(np.flatnonzero(right > left)[0])
                cands["ex"].append((int(rest[j] + sums[left[j]]), structs[sids[owner[j]]]))
            if collecting and n_win <= max_exact:
                ri, flat = _expand(left, right, order)
                starts = np.cumsum(sizes) - sizes
                found.append((np.asarray(sids)[owner[ri]], ri - starts[owner[ri]], flat))
            else:
                collecting, found = False, []
        if (left > 0).any():
            vals = np.where(left > 0, rest + sums[np.maximum(left - 1, 0)], big.min)
            j = int(np.argmax(vals))
            cands["below"].append((int(vals[j]), structs[sids[owner[j]]]))
        if (right < sums.size).any():
            vals = np.where(right < sums.size, rest + sums[np.minimum(right, sums.size - 1)], big.max)
            j = int(np.argmin(vals))
            cands["above"].append((int(vals[j]), structs[sids[owner[j]]]))

    def witness(key: str, pick: Any) -> Witness | None:
        if not cands[key]:
            return None
        value, s = pick(cands[key], key=lambda c: c[0])
        return _find(space, s, value, counting)

    exact = (_exact_set(space, structs, found, input_size, counting, lo, hi)
             if collecting and n_cfg else None)
    least_macs = int(exact.macs.min()) if exact is not None and len(exact) else None
    if exact is not None and max_macs is not None:
        exact = exact.subset(exact.macs <= max_macs)
    cert = Certificate(target, tolerance, len(structs), n_cfg, n_win, witness("small", min),
                       witness("large", max), witness("below", max), witness("above", min),
                       witness("ex", min), time.perf_counter() - t0,
                       rule_example="" if n_cfg else _rule_example(space),
                       never_valid=_never_valid(space, used, applying) if n_cfg else (),
                       fixed_knobs=tuple(k for k in STRUCTURE_KNOBS + BUDGET_KNOBS if space.domain(k).fixed))
    return Proof(cert, exact, tuple(structs[i] for i in np.flatnonzero(hits_per)), least_macs)


def _exact_set(space: SearchSpace, structs: list[dict[str, Any]],
               found: list[tuple[np.ndarray, np.ndarray, np.ndarray]], input_size: tuple[int, int],
               counting: Convention, lo: int, hi: int) -> ExactSet:
    """The listed window hits decoded into knob values, with their params and MACs."""
    h, w = input_size
    sid = np.concatenate([f[0] for f in found]) if found else np.zeros(0, dtype=np.int64)
    ri = np.concatenate([f[1] for f in found]) if found else np.zeros(0, dtype=np.int64)
    flat = np.concatenate([f[2] for f in found]) if found else np.zeros(0, dtype=np.int64)
    order = np.argsort(sid, kind="stable")
    sid, ri, flat = sid[order], ri[order], flat[order]
    budget = np.zeros((sid.size, len(BUDGET_KNOBS)), dtype=np.int64)
    params = np.zeros(sid.size, dtype=np.int64)
    macs = np.zeros(sid.size, dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1], True]) if sid.size else np.zeros(1, dtype=np.int64)
    for a, b in zip(bounds[:-1], bounds[1:]):
        s = structs[int(sid[a])]
        tables = budget_tables(space, s, h, w, counting=counting)
        base = base_cost(s, tables, h, w, counting)
        assert base is not None
        t3, t4, t5, tb, tn = tables
        i3, i4, i5 = np.unravel_index(flat[a:b], (len(t3.values), len(t4.values), len(t5.values)))
        ib, i_n = np.divmod(ri[a:b], len(tn.values))
        idx = (i3, i4, i5, ib, i_n)
        for col, (t, ix) in enumerate(zip(tables, idx)):
            budget[a:b, col] = np.asarray(t.values, dtype=np.int64)[ix]
        params[a:b] = base[0] + sum(t.params[ix] for t, ix in zip(tables, idx))
        macs[a:b] = base[1] + sum(t.macs[ix] for t, ix in zip(tables, idx))
    assert ((params >= lo) & (params <= hi)).all(), "exact set: a listed config is outside the window"
    used, local = np.unique(sid, return_inverse=True)  # keep only the structures with a listed config
    return ExactSet(tuple(structs[int(i)] for i in used), local.astype(np.int64), budget, params, macs, counting)


# ---- repair: a sampled point -> the nearest exact config ----------------------------------------

def _better(a: Any, b: Any) -> Any:
    """The better of two (total distance, MACs, ...) candidates (None loses)."""
    if a is None or b is None:
        return b if a is None else a
    if abs(a[0] - b[0]) <= 1e-9:
        return a if a[1] <= b[1] else b
    return a if a[0] < b[0] else b


MAX_REPAIR_STRUCTURES = 64  # structures solved per trial without an exact set
_SUMS_CACHE_BYTES = 64 * 2**20
_CHUNK = 1 << 20  # in-window completions of one structure compared at a time (bounds memory)


@dataclass(eq=False)
class Repairer:
    """Projects a sampled point onto the exact config nearest to it (`distance`; MACs break ties).

    With an exact set the projection is one vectorised pass over it. Without one (the window holds
    too many configs to list), the structures that have a config in the window are visited in order
    of a lower bound (the distance of their structure knobs alone); each is solved with sorted sums
    and the visit stops when the next bound exceeds the best found (or after MAX_REPAIR_STRUCTURES).
    Knobs in `free` (the space's `solve` list) cost nothing."""

    space: SearchSpace
    target: int
    tolerance: int
    input_size: tuple[int, int] = DEFAULT_INPUT
    counting: Convention = TRUE
    max_macs: int | None = None
    exact: ExactSet | None = None
    structures: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        self.free = tuple(self.space.solve)
        self._sw, self._sc = encode(self.structures)
        self._sw[:, BUDGET_COLS] = np.nan  # budget knobs: not part of the structure's lower bound
        self._sums: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._sums_bytes = 0

    def repair(self, point: Mapping[str, Any], free: Sequence[str] | None = None) -> Solution | None:
        """The exact config nearest `point`; `free` overrides the space's free knobs."""
        free = self.free if free is None else tuple(free)
        if self.exact is not None:
            return self.exact.nearest(point, free) if len(self.exact) else None
        return self._nearest_by_structure(point, free)

    def _nearest_by_structure(self, point: Mapping[str, Any], free: tuple[str, ...]) -> Solution | None:
        if not len(self.structures):  # no proof (space too large to enumerate): the sampled structure only
            fixed = {k: point[k] for k in STRUCTURE_KNOBS if k in point and k not in free}
            best = None
            for s in self.space.iter_structures(fixed=fixed):
                n, under, anyhow = self._solve_structure(s, point, free)
                best = _better(best, under or anyhow)
            if best is None:
                return self._nearest_count(fixed)
            _, macs, knobs, params, sw_, wd_ = best
            return Solution(knobs, params, macs, sw_, wd_, 0, "sampled structure")
        sw, wd = distance_terms(self._sw, self._sc, point, free)
        bound = sw * SWITCH_COST + wd
        best = loose = None  # (total, MACs, knobs, params, switches, width); loose ignores max_macs
        seen = 0
        for j in np.argsort(bound, kind="stable")[:MAX_REPAIR_STRUCTURES]:
            if best is not None and bound[j] > best[0] + 1e-9:
                break
            n, under, anyhow = self._solve_structure(self.structures[int(j)], point, free)
            seen += n
            best, loose = _better(best, under), _better(loose, anyhow)
        pick = best or loose
        if pick is None:
            return None
        _, macs, knobs, params, sw_, wd_ = pick
        return Solution(knobs, params, macs, sw_, wd_, seen, "by structure")

    def _nearest_count(self, fixed: Mapping[str, Any]) -> Solution | None:
        """The completion of the sampled structure whose count is nearest the target (outside the
        window: the trial is infeasible, and its constraint tells the sampler how far off it is)."""
        h, w = self.input_size
        best = None
        for s in self.space.iter_structures(fixed=fixed):
            tables = budget_tables(self.space, s, h, w, counting=self.counting)
            base = base_cost(s, tables, h, w, self.counting)
            if base is None:
                continue
            dist, ix = _nearest_combo(tables, base[0], self.target)
            knobs = _knobs_at(s, tables, ix)
            params = base[0] + sum(int(t.params[i]) for t, i in zip(tables, ix))
            macs = base[1] + sum(int(t.macs[int(i)]) for t, i in zip(tables, ix))
            cand = (dist, macs, knobs, params)
            if best is None or cand[:2] < best[:2]:
                best = cand
        return None if best is None else Solution(best[2], best[3], best[1], 0, 0.0, 0, "sampled structure")

    def _window_chunks(self, s: Mapping[str, Any]) -> Iterator[tuple[int, ExactSet]]:
        """(in-window completions of structure `s`, a chunk of at most about _CHUNK of them as an
        ExactSet) pairs: the structure's whole window, never all at once."""
        h, w = self.input_size
        tables = budget_tables(self.space, s, h, w, counting=self.counting)
        base = base_cost(s, tables, h, w, self.counting)
        if base is None:
            return
        t3, t4, t5, tb, tn = tables
        key = t3.params.tobytes() + t4.params.tobytes() + t5.params.tobytes()
        if key not in self._sums:
            if self._sums_bytes > _SUMS_CACHE_BYTES:
                self._sums.clear()
                self._sums_bytes = 0
            self._sums[key] = _sorted_sums(t3.params, t4.params, t5.params)
            self._sums_bytes += self._sums[key][0].nbytes * 2
        sums, order = self._sums[key]
        rest = (tb.params[:, None] + tn.params[None, :]).ravel() + base[0]
        left, right = _hit_bounds(sums, rest, self.target - self.tolerance, self.target + self.tolerance)
        ends = np.cumsum(right - left)
        total_hits = int(ends[-1]) if ends.size else 0
        a = 0
        while a < rest.size and total_hits:  # chunks of at most _CHUNK hits (a single entry may exceed it)
            done = int(ends[a - 1]) if a else 0
            b = max(a + 1, int(np.searchsorted(ends, done + _CHUNK, side="right")))
            ri, flat = _expand(left, right, order, a, b)
            a = b
            if not ri.size:
                continue
            i3, i4, i5 = np.unravel_index(flat, (len(t3.values), len(t4.values), len(t5.values)))
            ib, i_n = np.divmod(ri, len(tn.values))
            idx = (i3, i4, i5, ib, i_n)
            budget = np.stack([np.asarray(t.values, dtype=np.int64)[ix] for t, ix in zip(tables, idx)], axis=1)
            params = base[0] + sum(t.params[ix] for t, ix in zip(tables, idx))
            macs = base[1] + sum(t.macs[ix] for t, ix in zip(tables, idx))
            yield total_hits, ExactSet((s,), np.zeros(ri.size, dtype=np.int64), budget, params, macs, self.counting)

    def window(self) -> Iterator[ExactSet]:
        """Every config of the window (under max_macs, if set), in chunks (`_window_chunks`) over the
        structures the proof found hits in: what analytic objectives are solved over when the window
        holds too many configs to list (`MAX_EXACT`)."""
        for s in self.structures:
            for _, ex in self._window_chunks(s):
                yield ex if self.max_macs is None else ex.subset(ex.macs <= self.max_macs)

    def _solve_structure(self, s: Mapping[str, Any], point: Mapping[str, Any], free: tuple[str, ...]
                         ) -> tuple[Any, ...]:
        best = loose = None
        total_hits = 0
        for hits, ex in self._window_chunks(s):
            total_hits = hits
            sw, wd = ex.distances(point, free)
            total = sw * SWITCH_COST + wd
            every = np.ones(len(ex), dtype=bool)
            under = every if self.max_macs is None else ex.macs <= self.max_macs
            best = _better(best, _best_of(under, total, ex.macs, ex.params, sw, wd, ex))
            loose = _better(loose, _best_of(every, total, ex.macs, ex.params, sw, wd, ex))
        return (total_hits, best, loose)


def _best_of(keep: np.ndarray, total: np.ndarray, macs: np.ndarray, params: np.ndarray, sw: np.ndarray,
             wd: np.ndarray, ex: ExactSet) -> Any:
    """(distance, MACs, knobs, params, switches, width sum) of the nearest kept config; None if none."""
    if not keep.any():
        return None
    sub = np.flatnonzero(keep)
    i = int(sub[_pick(total[sub], macs[sub])])
    return (float(total[i]), int(macs[i]), ex.knobs(i), int(params[i]), int(sw[i]), float(wd[i]))


def _never_valid(space: SearchSpace, used: Mapping[str, set[Any]], applying: set[str]
                 ) -> tuple[tuple[str, Any], ...]:
    """Domain values that no valid config uses, for knobs that apply somewhere in the space."""
    out = []
    for k, seen in used.items():
        if k not in applying:
            continue  # the knob never applies (e.g. a CBAM ratio with that CBAM always off)
        for v in space.domain(k).values:
            if v not in seen:
                out.append((k, v))
    return tuple(out)


def check_values(cert: Certificate) -> None:
    """A one-line ConfigError for a domain value that breaks a rule in every config of the space."""
    if not cert.never_valid or cert.smallest is None:
        return
    knob, value = cert.never_valid[0]
    pinned = [kv for kv in cert.never_valid if kv[0] in cert.fixed_knobs]
    if pinned:
        knob, value = pinned[0]
    knobs = switched_on(knob, knobs_from_config(FeatherFaceConfig(**cert.smallest.config)))
    knobs[knob] = value
    try:
        config_from_knobs(knobs)
        why = "no valid config of this space uses it"
    except ConfigError as exc:
        why = f"e.g. {exc}"
    more = f" (and {len(cert.never_valid) - 1} more such values)" if len(cert.never_valid) > 1 else ""
    raise ConfigError(f"space: {knob}={value!r} breaks a rule in every config of this space{more}: {why}")


def _rule_example(space: SearchSpace) -> str:
    """The message of a rule that the space's first combination breaks."""
    for s in space.iter_structures():
        knobs = dict(s)
        for k in BUDGET_KNOBS:
            knobs.setdefault(k, space.domain(k).values[0])
        try:
            config_from_knobs(knobs)
        except ConfigError as exc:
            return str(exc)
    return ""


def check_reachable(cert: Certificate) -> None:
    """Raise a one-line error if the certificate proves the window unreachable."""
    if not cert.complete:
        return
    if cert.smallest is None:
        raise ConfigError("the space holds no valid config: every combination breaks a rule of the "
                          f"architecture, e.g. {cert.rule_example or 'an empty domain'}")
    t, tol = cert.target, cert.tolerance
    if t < cert.smallest.params and t + tol < cert.smallest.params:
        raise NoConfigInWindow(field="target", value=t, rule=f"smallest config in this space has {cert.smallest.params:,} params")
    largest = cert.largest.params  # type: ignore[union-attr]
    if t - tol > largest:
        raise NoConfigInWindow(field="target", value=t, rule=f"largest config in this space has {largest:,} params")
    if cert.in_window == 0:
        parts = []
        if cert.below is not None:
            parts.append(f"{cert.below.params:,} ({cert.below.params - t:+,})")
        if cert.above is not None:
            parts.append(f"{cert.above.params:,} ({cert.above.params - t:+,})")
        need = min(abs(x.params - t) for x in (cert.below, cert.above) if x is not None)
        window = window_text(t, tol)
        raise NoConfigInWindow(
            field="target", value=t, refs=("tolerance",),
            rule=f"no config in this space has {window} params; nearest achievable: {' and '.join(parts)} "
                 f"(proof: {cert.evidence()}); widen the space or use {{tolerance}} {need}")
