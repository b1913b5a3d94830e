"""Landing on the budget by construction, and proving what the space can reach.

The parameter count is a sum of terms, each depending on few knobs:

    params = base(structure) + level(s_P3) + level(s_P4) + level(s_P5) + cbam_b(r_b) + cbam_n(r_n)

where `level(s)` is one level's SSH + shuffle + head with output width s (its parameters do not depend
on the level; its MACs do), `cbam_*` the CBAM blocks at a ratio, and `base` everything else (backbone,
neck) - all given the *structure* (the non-budget knobs). MACs split the same way. So:

* `Solver.solve` takes a trial's sampled knobs and enumerates every combination of the budget knobs
  (29^3 x 4 x 4 = 390,224 in the default space) with numpy, for each value of the solved structure
  knobs (default: BiFPN repeats), keeps those within the window and under `max_macs`, and returns the
  one with the fewest MACs - or, if none, the nearest one.
* `certify` runs the same sums over *every* structure of the space (sorted sums + binary search),
  which proves whether any config of the space lies within the window, how many do, and the nearest
  achievable counts on either side, each with a witness config.

The per-term costs come from the same block cost functions as `featherface_tune.counter.analytic`;
each solution is re-counted with `count()` by the caller, and tests check the split on random configs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from featherface_tune.counter.analytic import GROUPS, cbam_levels, count, level_hws, level_tail
from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.config import FeatherFaceConfig, backbone_channels
from featherface_tune.tuner.records import window_text
from featherface_tune.tuner.space import (
    BUDGET_KNOBS, CONTEXT, SSH_KNOBS, STRUCTURE_KNOBS, Domain, SearchSpace, applies, config_from_knobs,
    inactive_value, knobs_from_config, switched_on,
)

MAX_CERTIFY_STRUCTURES = 250_000


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


@lru_cache(maxsize=4096)
def _valid_ratios(values: tuple[int, ...], which: str, width: float | int) -> tuple[int, ...]:
    if which == "backbone":
        ok = [r for r in values if _probe(backbone_width=float(width), backbone_cbam=True,
                                          backbone_cbam_reduction=r, neck_cbam=False, shuffle="none")]
    else:
        ok = [r for r in values if _probe(neck_channels=int(width), neck_cbam=True, neck_cbam_reduction=r,
                                          backbone_cbam=False, shuffle="none")]
    return tuple(ok)


@lru_cache(maxsize=8192)
def _ssh_table(values: tuple[int, ...], n: int, dcn: bool, shuffle: str, anchors: int, landmarks: bool,
               hw: int) -> tuple[np.ndarray, np.ndarray]:
    # SSH + shuffle + heads of one level, as count() sums them (dense DCN convention)
    tails = [level_tail(n, s, dcn, shuffle, anchors, landmarks, hw) for s in values]
    return (np.array([t[0] + t[2] + t[4] for t in tails], dtype=np.int64),
            np.array([t[1] + t[3] + t[5] for t in tails], dtype=np.int64))


@lru_cache(maxsize=4096)
def _cbam_table(values: tuple[int, ...], on: bool, chans: tuple[int, int, int], hws: tuple[int, int, int]
                ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    if not on:
        return values[:1], np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    costs = [cbam_levels(chans, r, hws) for r in values]
    return (values, np.array([p for p, _ in costs], dtype=np.int64),
            np.array([m for _, m in costs], dtype=np.int64))


@lru_cache(maxsize=8192)
def _base(bw: float, neck: str, reps: int, n: int, h: int, w: int) -> tuple[int, int] | None:
    """(params, MACs) of the backbone and neck, read off the count of a probe config."""
    probe = _probe(backbone_width=bw, neck=neck, bifpn_repeats=reps, neck_channels=n,
                   backbone_cbam=False, neck_cbam=False, ssh_channels=4, ssh_deformable=False,
                   shuffle="none", anchors_per_cell=1, landmarks=False)
    if probe is None:
        return None
    groups = dict(zip(GROUPS, count(probe, h, w).groups))
    (bp, bm), (np_, nm) = groups["backbone"], groups["neck"]
    return bp + np_, bm + nm


def budget_tables(space: SearchSpace, s: Mapping[str, Any], h: int, w: int,
                  domains: Mapping[str, tuple[Any, ...]] | None = None,
                  params_only: bool = False) -> list[Table]:
    """Tables for the five budget knobs given structure `s` (domains default to the space's);
    values that break a rule in this structure are left out. `params_only`: MACs left at 0."""
    hws = (0, 0, 0) if params_only else level_hws(h, w)
    doms = {k: (tuple(domains[k]) if domains and k in domains else space.domain(k).values)
            for k in BUDGET_KNOBS}
    out = []
    n = s["neck_channels"]
    for k, hw in zip(SSH_KNOBS, hws):
        vals = _valid_ssh(doms[k], s["shuffle"], s["shuffle_groups"])
        p, m = _ssh_table(vals, n, s["ssh_deformable"], s["shuffle"], s["anchors_per_cell"],
                          s["landmarks"], hw)
        out.append(Table(k, vals, p, m))
    bw = float(s["backbone_width"])
    for knob, which, width, chans in (("backbone_cbam_reduction", "backbone", bw, backbone_channels(bw)),
                                      ("neck_cbam_reduction", "neck", n, (n, n, n))):
        on = applies(knob, s)
        vals = _valid_ratios(doms[knob], which, width) if on else (inactive_value(knob, s, Domain(doms[knob])),)
        if not vals:
            out.append(Table(knob, (), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
            continue
        v2, p, m = _cbam_table(vals, on, chans, hws)
        out.append(Table(knob, v2, p, m))
    return out


def base_cost(s: Mapping[str, Any], tables: list[Table], h: int, w: int) -> tuple[int, int] | None:
    """(params, MACs) of everything but the budget terms; None if the structure has no valid config."""
    if any(len(t.values) == 0 for t in tables):
        return None
    return _base(float(s["backbone_width"]), s["neck"], s["bifpn_repeats"], s["neck_channels"], h, w)


# ---- the per-trial solver ---------------------------------------------------------------------

@dataclass(frozen=True)
class Solution:
    """A full knob assignment chosen by the solver, with its predicted counts."""

    knobs: Mapping[str, Any]
    params: int
    macs: int
    in_window: int  # completions of the sampled knobs within the window (and under max_macs)
    checked: int  # completions enumerated

    @property
    def exact(self) -> bool:
        return self.in_window > 0


@dataclass(frozen=True)
class Solver:
    space: SearchSpace
    target: int
    tolerance: int
    input_size: tuple[int, int] = (640, 640)
    max_macs: int | None = None

    def solve(self, sampled: Mapping[str, Any]) -> Solution | None:
        """Complete `sampled` (all knobs but the solved ones): the fewest-MACs completion within the
        window (and under max_macs), else the completion nearest the target. None if no valid one.

        Structure knobs missing from `sampled` (solved ones, e.g. `bifpn_repeats`) are tried value by
        value; the budget knobs are enumerated together with numpy."""
        best: Solution | None = None
        in_window = checked = 0
        for extra in self._structure_combos(sampled):
            sol = self._solve_budget({**sampled, **extra})
            if sol is None:
                continue
            in_window += sol.in_window
            checked += sol.checked
            if best is None or self._rank(sol) < self._rank(best):
                best = sol
        if best is None:
            return None
        return Solution(best.knobs, best.params, best.macs, in_window, checked)

    def _rank(self, sol: Solution) -> tuple[int, int, int]:
        return (0, sol.macs, 0) if sol.exact else (1, abs(sol.params - self.target), sol.macs)

    def _structure_combos(self, sampled: Mapping[str, Any]) -> list[dict[str, Any]]:
        return list(self.space.iter_structures(fixed=sampled))

    def _solve_budget(self, sampled: Mapping[str, Any]) -> Solution | None:
        h, w = self.input_size
        doms = {k: (tuple(self.space.domain(k).values) if k not in sampled else (sampled[k],))
                for k in BUDGET_KNOBS}
        tables = budget_tables(self.space, sampled, h, w, doms)
        base = base_cost(sampled, tables, h, w)
        if base is None:
            return None
        P = _param_grid(tables, base[0])
        shape = P.shape
        lo, hi = self.target - self.tolerance, self.target + self.tolerance
        mask = (P >= lo) & (P <= hi)
        idx = np.flatnonzero(mask)
        macs_of = lambda flat: base[1] + sum(  # noqa: E731
            tables[i].macs[ix] for i, ix in enumerate(np.unravel_index(flat, shape)))
        n_ok = 0
        if idx.size:
            M = macs_of(idx)
            if self.max_macs is not None:
                under = M <= self.max_macs
                n_ok = int(under.sum())
                pick = idx[under][np.argmin(M[under])] if n_ok else idx[np.argmin(M)]
            else:
                n_ok = int(idx.size)
                pick = idx[np.argmin(M)]
        else:
            dist = np.abs(P.ravel() - self.target)
            near = np.flatnonzero(dist == dist.min())
            pick = near[np.argmin(macs_of(near))]
        ix = np.unravel_index(pick, shape)
        return Solution(_knobs_at(sampled, tables, ix), int(P[ix]), int(macs_of(np.array([pick]))[0]), n_ok,
                        int(P.size))


def _param_grid(tables: list[Table], base_params: int) -> np.ndarray:
    """Params of every combination of the tables' values (one axis per table)."""
    P = np.full([len(t.values) for t in tables], base_params, dtype=np.int64)
    for i, t in enumerate(tables):
        P = P + t.params.reshape([-1 if j == i else 1 for j in range(len(tables))])
    return P


def _knobs_at(s: Mapping[str, Any], tables: list[Table], ix: tuple[Any, ...]) -> dict[str, Any]:
    """`s` completed with the tables' values at grid index `ix`."""
    knobs = dict(s)
    for t, i in zip(tables, ix):
        knobs[t.knob] = t.values[int(i)]
    return knobs


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

    @property
    def reachable(self) -> bool:
        return self.in_window > 0

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


@lru_cache(maxsize=4096)
def _triple_sums(p3: bytes, p4: bytes, p5: bytes) -> np.ndarray:
    a, b, c = (np.frombuffer(x, dtype=np.int64) for x in (p3, p4, p5))
    return np.sort((a[:, None, None] + b[None, :, None] + c[None, None, :]).ravel())


def _find(space: SearchSpace, s: Mapping[str, Any], value: int) -> Witness:
    """A config of structure `s` with exactly `value` params (known to exist)."""
    tables = budget_tables(space, s, 32, 32)
    base = base_cost(s, tables, 32, 32)
    assert base is not None
    P = _param_grid(tables, base[0])
    ix = np.unravel_index(int(np.flatnonzero(P.ravel() == value)[0]), P.shape)
    return Witness(value, config_from_knobs(_knobs_at(s, tables, ix)).to_dict())


def certify(space: SearchSpace, target: int, tolerance: int,
            max_structures: int = MAX_CERTIFY_STRUCTURES) -> Certificate:
    """Enumerate every structure of the space and count the configs within the window."""
    t0 = time.perf_counter()
    lo, hi = target - tolerance, target + tolerance
    # group the structures by their three SSH-level tables: each group shares one sorted sum array
    groups: dict[tuple[bytes, bytes, bytes], tuple[list[Mapping[str, Any]], list[np.ndarray]]] = {}
    n_struct = 0
    used: dict[str, set[Any]] = {k: set() for k in STRUCTURE_KNOBS + BUDGET_KNOBS}
    applying: set[str] = {k for k in STRUCTURE_KNOBS + BUDGET_KNOBS if k not in CONTEXT}  # + in context
    for s in space.iter_structures():
        n_struct += 1
        if n_struct > max_structures:
            return Certificate(target, tolerance, n_struct - 1, 0, 0, None, None, None, None, None,
                               time.perf_counter() - t0, complete=False)
        tables = budget_tables(space, s, 32, 32, params_only=True)
        applying.update(k for k in CONTEXT if applies(k, s))
        base = base_cost(s, tables, 32, 32)
        if base is None:
            continue
        tb, tn = tables[3], tables[4]
        rest = (tb.params[:, None] + tn.params[None, :]).ravel() + base[0]
        key = (tables[0].params.tobytes(), tables[1].params.tobytes(), tables[2].params.tobytes())
        g = groups.setdefault(key, ([], []))
        g[0].append(s)
        g[1].append(rest)
        for k in STRUCTURE_KNOBS:
            used[k].add(s[k])
        for t in tables:
            if applies(t.knob, s):
                used[t.knob].update(t.values)
    n_cfg = n_win = 0
    cands: dict[str, list[tuple[int, Mapping[str, Any]]]] = {k: [] for k in ("small", "large", "below", "above", "ex")}
    big = np.iinfo(np.int64)
    for key, (structs, rests) in groups.items():
        sums = _triple_sums(*key)
        owner = np.repeat(np.arange(len(structs)), [r.size for r in rests])
        rest = np.concatenate(rests)
        n_cfg += sums.size * rest.size
        j = int(np.argmin(rest))
        cands["small"].append((int(rest[j] + sums[0]), structs[owner[j]]))
        j = int(np.argmax(rest))
        cands["large"].append((int(rest[j] + sums[-1]), structs[owner[j]]))
        left = np.searchsorted(sums, lo - rest, side="left")
        right = np.searchsorted(sums, hi - rest, side="right")
        n_here = int((right - left).sum())
        n_win += n_here
        if n_here and not cands["ex"]:
            j = int(np.flatnonzero(right > left)[0])
            cands["ex"].append((int(rest[j] + sums[left[j]]), structs[owner[j]]))
        if (left > 0).any():
            vals = np.where(left > 0, rest + sums[np.maximum(left - 1, 0)], big.min)
            j = int(np.argmax(vals))
            cands["below"].append((int(vals[j]), structs[owner[j]]))
        if (right < sums.size).any():
            vals = np.where(right < sums.size, rest + sums[np.minimum(right, sums.size - 1)], big.max)
            j = int(np.argmin(vals))
            cands["above"].append((int(vals[j]), structs[owner[j]]))

    def witness(key: str, pick: Any) -> Witness | None:
        if not cands[key]:
            return None
        value, s = pick(cands[key], key=lambda c: c[0])
        return _find(space, s, value)

    return Certificate(target, tolerance, n_struct, n_cfg, n_win, witness("small", min),
                       witness("large", max), witness("below", max), witness("above", min),
                       witness("ex", min), time.perf_counter() - t0,
                       rule_example="" if n_cfg else _rule_example(space),
                       never_valid=_never_valid(space, used, applying) if n_cfg else (),
                       fixed_knobs=tuple(k for k in STRUCTURE_KNOBS + BUDGET_KNOBS if space.domain(k).fixed))


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
        raise NoConfigInWindow(f"--target {t:,}: smallest config in this space has {cert.smallest.params:,} params")
    if t - tol > cert.largest.params:  # type: ignore[union-attr]
        raise NoConfigInWindow(f"--target {t:,}: largest config in this space has {cert.largest.params:,} params")  # type: ignore[union-attr]
    if cert.in_window == 0:
        parts = []
        if cert.below is not None:
            parts.append(f"{cert.below.params:,} ({cert.below.params - t:+,})")
        if cert.above is not None:
            parts.append(f"{cert.above.params:,} ({cert.above.params - t:+,})")
        need = min(abs(x.params - t) for x in (cert.below, cert.above) if x is not None)
        window = window_text(t, tol)
        raise NoConfigInWindow(
            f"no config in this space has {window} params; nearest achievable: {' and '.join(parts)} "
            f"(proof: {cert.evidence()}); widen the space or use --tolerance {need}")


