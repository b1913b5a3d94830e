"""The search space: which config fields vary, over which values, and which are fixed.

A space maps every *knob* to a finite domain. Knobs are the config fields, except that the SSH width
is three knobs, one per level (`ssh_channels_p3`, `_p4`, `_p5`). Some knobs only apply in context:
`bifpn_repeats` only with `neck = "bifpn"` (0 with FPN), a CBAM ratio only with that CBAM on,
`shuffle_groups` only with a shuffle. Optuna samples every knob with more than one value, and the
solver (`featherface_tune.tuner.solve`) repairs the sample to the exact config nearest to it. Knobs
named in `solve` (default: none) are not sampled: the repair picks them freely (they cost nothing in
its distance; MACs break ties). The five *budget knobs* (per-level SSH widths, CBAM ratios) are the
ones the proof enumerates with sorted sums.

Space files are TOML; each key is a knob (or `ssh_channels`, for all three levels at once):
    neck_channels = { min = 32, max = 96, step = 1 }   # a range
    neck_cbam_reduction = [4, 8, 16]                    # a set of choices
    ssh_deformable = true                               # fixed
    solve = ["ssh_channels_p5", "neck_cbam_reduction"]  # knobs left to the solver (default: none)
Knobs a file does not name keep the default space's domain.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from featherface_tune.errors import ConfigError
from featherface_tune.models.config import FIELDS, FeatherFaceConfig, Field, parse_value

LEVEL_SUFFIXES = ("_p3", "_p4", "_p5")


@dataclass(frozen=True)
class ContextRule:
    """A knob applies only while knob `on` takes one of `when`; otherwise it takes `off` (always,
    if `forced`; else only when `off` is in its domain, and its first value if not)."""

    on: str
    when: tuple[Any, ...]
    off: Any
    forced: bool = False


@dataclass(frozen=True)
class Knobs:
    """The knobs of a table of config fields (`models.config.FIELDS`), each list in sampling order: a
    per-level field is one knob per level, a knob's switch comes before it, the budget knobs last."""

    structure: tuple[str, ...]  # the knobs the proof enumerates structure by structure
    ssh: tuple[str, ...]  # the per-level budget knobs (the SSH widths)
    ratio: tuple[str, ...]  # the other budget knobs (the CBAM ratios)
    width: tuple[str, ...]  # knobs that change a size (the repair's relative width terms)
    switch: tuple[str, ...]  # knobs that change what the network is (the repair's switch costs)
    types: dict[str, type]
    choices: dict[str, tuple[str, ...]]  # the values of str knobs
    context: dict[str, ContextRule]
    defaults: dict[str, Any]  # knob -> its domain in the default space (as a space file writes it)
    field_of: dict[str, str]  # knob -> config field

    @property
    def budget(self) -> tuple[str, ...]:
        return self.ssh + self.ratio

    @property
    def all(self) -> tuple[str, ...]:
        return self.structure + self.budget


def derive_knobs(fields: Sequence[Field]) -> Knobs:
    """Every knob list, type, context rule and default domain of the space (and the solver), derived
    from the config's field table."""
    def names(f: Field) -> tuple[str, ...]:
        return tuple(f.name + s for s in LEVEL_SUFFIXES) if f.per_level else (f.name,)

    by_knob = [(k, f) for f in fields for k in names(f)]
    structure = tuple(k for k, f in by_knob if not f.budget)
    ssh = tuple(k for k, f in by_knob if f.budget and f.per_level)
    ratio = tuple(k for k, f in by_knob if f.budget and not f.per_level)
    return Knobs(
        structure, ssh, ratio,
        width=tuple(k for k in structure + ssh + ratio if dict(by_knob)[k].kind == "width"),
        switch=tuple(k for k in structure if dict(by_knob)[k].kind == "switch"),
        types={k: f.type for k, f in by_knob}, choices={k: f.choices for k, f in by_knob if f.choices},
        context={k: ContextRule(f.on, f.when, f.off, f.forced) for k, f in by_knob if f.on is not None},
        defaults={k: f.space for k, f in by_knob}, field_of={k: f.name for k, f in by_knob})


KNOB_TABLE = derive_knobs(FIELDS)
SSH_KNOBS = KNOB_TABLE.ssh
RATIO_KNOBS = KNOB_TABLE.ratio
BUDGET_KNOBS = KNOB_TABLE.budget
# Sampling order matters: a knob's context (neck, the CBAM switches, shuffle) comes first.
STRUCTURE_KNOBS = KNOB_TABLE.structure
KNOBS = KNOB_TABLE.all
WIDTH_KNOBS = KNOB_TABLE.width
SWITCH_KNOBS = KNOB_TABLE.switch
BOOL_KNOBS = tuple(k for k in KNOBS if KNOB_TABLE.types[k] is bool)
STR_KNOBS = KNOB_TABLE.choices
FLOAT_KNOBS = tuple(k for k in KNOBS if KNOB_TABLE.types[k] is float)
INT_KNOBS = tuple(k for k in KNOBS if KNOB_TABLE.types[k] is int)
MAX_DOMAIN = 4096
DEFAULT_SOLVE: tuple[str, ...] = ()  # Optuna samples every knob; the solver repairs the sample
MAX_SOLVE_COMBOS = 64  # combinations of free structure knobs (they make the repair try each)


@dataclass(frozen=True)
class Domain:
    """A finite set of values; `step` is set for an integer range (min..max by step)."""

    values: tuple[Any, ...]
    step: int | None = None

    @property
    def fixed(self) -> bool:
        return len(self.values) == 1

    @property
    def is_range(self) -> bool:
        return self.step is not None and len(self.values) > 1

    def to_spec(self) -> Any:
        if self.fixed:
            return self.values[0]
        if self.is_range:
            return {"min": self.values[0], "max": self.values[-1], "step": self.step}
        return list(self.values)


def int_range(lo: int, hi: int, step: int = 1) -> Domain:
    return Domain(tuple(range(lo, hi + 1, step)), step)


def choice(*values: Any) -> Domain:
    return Domain(tuple(values))


def fixed(value: Any) -> Domain:
    return Domain((value,))


@dataclass(frozen=True)
class SearchSpace:
    """Every knob's domain plus the knobs the solver picks exactly (`solve`)."""

    domains: tuple[tuple[str, Domain], ...]
    solve: tuple[str, ...] = DEFAULT_SOLVE

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", dict(self.domains))
        names = [n for n, _ in self.domains]
        if tuple(names) != KNOBS:
            raise ConfigError("space: internal knob order mismatch")  # pragma: no cover
        for k in self.solve:
            if k not in KNOBS:
                raise ConfigError(f"space: solve: unknown knob {k!r}")
        combos = math.prod(len(self.domain(k).values) for k in self.solve if k in STRUCTURE_KNOBS)
        if combos > MAX_SOLVE_COMBOS:
            raise ConfigError(f"space: solve: the structure knobs in solve give {combos} combinations per "
                              f"trial (at most {MAX_SOLVE_COMBOS}); let Optuna sample some of them")

    def domain(self, knob: str) -> Domain:
        try:
            return self._index[knob]  # type: ignore[attr-defined,no-any-return]
        except KeyError:
            raise ConfigError(f"space: unknown knob {knob!r}") from None

    def with_domain(self, knob: str, dom: Domain) -> "SearchSpace":
        return SearchSpace(tuple((n, dom if n == knob else d) for n, d in self.domains), self.solve)

    def with_solve(self, solve: Sequence[str]) -> "SearchSpace":
        return SearchSpace(self.domains, tuple(k for k in KNOBS if k in set(solve)))

    @property
    def solved(self) -> tuple[str, ...]:
        """Knobs the solver picks (those with more than one value)."""
        return tuple(k for k in self.solve if not self.domain(k).fixed)

    @property
    def sampled(self) -> tuple[str, ...]:
        """Knobs Optuna samples (in order): more than one value and not solved."""
        return tuple(k for k in KNOBS if not self.domain(k).fixed and k not in self.solve)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {n: dom.to_spec() for n, dom in self.domains}
        d["solve"] = list(self.solve)
        return d

    # ---- sampling (Optuna define-by-run) -----------------------------------------------------
    def sample(self, trial: Any) -> dict[str, Any]:
        """Suggest the sampled knobs on `trial` (an Optuna Trial or FixedTrial).

        Returns values for every knob except the solved ones; knobs that do not apply in
        context (e.g. `bifpn_repeats` with FPN) get their inactive value and are not suggested.
        """
        out: dict[str, Any] = {}
        for knob in KNOBS:
            inactive = inactive_value(knob, out, self.domain(knob))
            if inactive is not None:
                out[knob] = inactive
                continue
            if knob in self.solve and not self.domain(knob).fixed:
                continue
            dom = self.domain(knob)
            if dom.fixed:
                out[knob] = dom.values[0]
            elif dom.is_range:
                out[knob] = trial.suggest_int(knob, dom.values[0], dom.values[-1], step=dom.step)
            else:
                out[knob] = trial.suggest_categorical(knob, list(dom.values))
        return out

    def iter_structures(self, fixed: Mapping[str, Any] | None = None) -> Iterable[dict[str, Any]]:
        """Every combination of the structure knobs not in `fixed`, context rules applied (no
        duplicates); each combination also holds the `fixed` items."""
        fixed = fixed or {}
        yield from _iter(self, [k for k in STRUCTURE_KNOBS if k not in fixed], dict(fixed))

    def size(self) -> int:
        """Configs in the space, counted over all knobs (context rules applied; before validity)."""
        total = 0
        ssh = math.prod(len(self.domain(k).values) for k in SSH_KNOBS)
        for s in self.iter_structures():
            r = 1
            for knob in RATIO_KNOBS:
                r *= len(self.domain(knob).values) if applies(knob, s) else 1
            total += ssh * r
        return total


# The one statement of which knob applies where (from the config's field table); sampling,
# enumeration, the space size, the solver and its certificate all read it.
CONTEXT: dict[str, ContextRule] = KNOB_TABLE.context


def applies(knob: str, ctx: Mapping[str, Any]) -> bool:
    """False only when the knob's context is set in `ctx` and switches it off."""
    rule = CONTEXT.get(knob)
    return rule is None or rule.on not in ctx or ctx[rule.on] in rule.when


def switched_on(knob: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """`knobs` with the knob's context set so that the knob applies."""
    rule = CONTEXT.get(knob)
    if rule is None or applies(knob, knobs):
        return dict(knobs)
    return {**knobs, rule.on: rule.when[0]}


def inactive_value(knob: str, ctx: Mapping[str, Any], dom: Domain) -> Any:
    """The value a knob takes when it does not apply in context, else None."""
    if applies(knob, ctx):
        return None
    rule = CONTEXT[knob]
    return rule.off if rule.forced or rule.off in dom.values else dom.values[0]


def _iter(space: SearchSpace, knobs: list[str], ctx: dict[str, Any]) -> Iterable[dict[str, Any]]:
    if not knobs:
        yield dict(ctx)
        return
    knob, rest = knobs[0], knobs[1:]
    inactive = inactive_value(knob, ctx, space.domain(knob))
    values = (inactive,) if inactive is not None else space.domain(knob).values
    for v in values:
        ctx[knob] = v
        yield from _iter(space, rest, ctx)
    del ctx[knob]


_PER_LEVEL = tuple(f for f in FIELDS if f.per_level)


def config_from_knobs(values: Mapping[str, Any]) -> FeatherFaceConfig:
    """The config for a full knob assignment (raises ConfigError if it breaks a rule)."""
    fields = {k: v for k, v in values.items() if KNOB_TABLE.field_of.get(k, k) == k}
    for f in _PER_LEVEL:
        fields[f.name] = tuple(values[f.name + s] for s in LEVEL_SUFFIXES)
    return FeatherFaceConfig(**fields)


def knobs_from_config(cfg: FeatherFaceConfig) -> dict[str, Any]:
    """Every knob's value in a config (a per-level field's levels as three knobs)."""
    d = cfg.__dict__
    out = {}
    for k in KNOBS:
        name = KNOB_TABLE.field_of[k]
        v = d[name]
        if name != k:  # one level of a per-level field: one int for all levels, or one per level
            v = v if isinstance(v, int) else v[LEVEL_SUFFIXES.index(k[len(name):])]
        out[k] = v
    return out


# ---- the default space ---------------------------------------------------------------------

def default_space() -> SearchSpace:
    """Around FeatherFace: widths 16..128, CBAM ratios {4, 8, 16, 32}, BiFPN x1-4 or FPN,
    shuffle variants, DCN and CBAM on/off, per-level SSH widths and separate CBAM ratios; Optuna
    samples all of them and the solver repairs each sample to the nearest exact config. The domains
    are the config field table's (`models.config.FIELDS`)."""
    return SearchSpace(tuple((k, _default_domain(KNOB_TABLE.defaults[k])) for k in KNOBS))


def _default_domain(spec: Any) -> Domain:
    """A domain written as in a space file (value, list or range), trusted: the field table's own."""
    if isinstance(spec, dict):
        return int_range(spec["min"], spec["max"], spec.get("step", 1))
    return choice(*spec) if isinstance(spec, list) else fixed(spec)


# ---- parsing domains from files and --fix ---------------------------------------------------

# The other fields of the config a value is checked in: off where they could interact with it (CBAM
# off, no shuffle) and BiFPN on (where `bifpn_repeats` applies), so a value is rejected only for a
# rule it breaks on its own; the rules that tie it to other knobs (a CBAM ratio vs the width it
# divides, the shuffle groups vs the SSH widths) are the certificate's (`check_values`).
_PROBE = {"backbone_cbam": False, "neck_cbam": False, "shuffle": "none", "neck": "bifpn"}


def _check_value(knob: str, v: Any, where: str) -> Any:
    """`v` if the config accepts it for `knob` (in the context where the knob applies), else a
    ConfigError naming where it came from, the knob and the config's rule."""
    fields: dict[str, Any] = dict(_PROBE)
    if knob in SSH_KNOBS:
        widths: list[Any] = [64, 64, 64]
        widths[SSH_KNOBS.index(knob)] = v
        fields["ssh_channels"] = tuple(widths)
        own = "ssh_channels"
    else:
        fields[knob] = v
        own = knob
    for other, rule in CONTEXT.items():  # e.g. neck="fpn" needs bifpn_repeats=0
        if rule.on == knob and rule.forced and not applies(other, fields):
            fields[other] = rule.off
    try:
        FeatherFaceConfig(**fields)
    except ConfigError as exc:
        if exc.field == own:
            msg = str(exc) if str(exc).startswith(f"{knob}=") else f"{knob}: {exc}"
            raise ConfigError(f"{where}: {msg}" if where else msg, field=own) from None
    return float(v) if knob in FLOAT_KNOBS else v  # as the config holds it (1 -> 1.0)


def parse_domain(knob: str, spec: Any, where: str) -> Domain:
    """A domain from a TOML value: scalar (fixed), list (choices) or {min, max, step} (range)."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"min", "max", "step"})
        if unknown or "min" not in spec or "max" not in spec:
            raise ConfigError(f"{where}: {knob}: a range needs min and max (and optional step), got "
                              + ", ".join(f"{k}" for k in spec))
        if knob not in INT_KNOBS:
            raise ConfigError(f"{where}: {knob}: ranges are only for integer knobs; list the values")
        lo, hi, step = spec["min"], spec["max"], spec.get("step", 4 if knob in SSH_KNOBS else 1)
        for name, v in (("min", lo), ("max", hi), ("step", step)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{where}: {knob}: {name}={v!r} must be an integer")
        if step < 1:
            raise ConfigError(f"{where}: {knob}: step={step} must be at least 1")
        if lo > hi:
            raise ConfigError(f"{where}: {knob}: empty range (min={lo} > max={hi})")
        span = range(lo, hi + 1, step)
        if len(span) > MAX_DOMAIN:  # before materialising it: min=1, max=10**12 must not fill memory
            raise ConfigError(f"{where}: {knob}: range has {len(span):,} values (at most {MAX_DOMAIN:,})")
        values = tuple(span)
        for v in values:
            _check_value(knob, v, where)
        return Domain(values, step)
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: {knob}: empty list of values")
        vals: list[Any] = []
        for v in spec:
            v = _check_value(knob, v, where)
            if v not in vals:
                vals.append(v)
        return Domain(tuple(vals))
    return fixed(_check_value(knob, spec, where))


def apply_settings(space: SearchSpace, data: Mapping[str, Any], where: str) -> SearchSpace:
    """Change a space by a mapping of knob -> domain spec (as in a space file)."""
    data = dict(data)
    solve = data.pop("solve", None)
    for key, spec in data.items():
        if key == "ssh_channels":
            dom = parse_domain("ssh_channels_p3", spec, where)
            for k in SSH_KNOBS:
                space = space.with_domain(k, dom)
        elif key in KNOBS:
            space = space.with_domain(key, parse_domain(key, spec, where))
        else:
            raise ConfigError(f"{where}: unknown knob {key!r}; valid knobs: ssh_channels, " + ", ".join(KNOBS))
    if solve is not None:
        if not isinstance(solve, list) or not all(isinstance(s, str) for s in solve):
            raise ConfigError(f"{where}: solve must be a list of knob names")
        space = space.with_solve(_check_solve(solve, where))
    return space


def _check_solve(names: Sequence[str], where: str) -> list[str]:
    out: list[str] = []
    for s in names:
        if s == "ssh_channels":
            out.extend(SSH_KNOBS)
        elif s in KNOBS:
            out.append(s)
        else:
            raise ConfigError(f"{where}: solve: unknown knob {s!r}; the budget knobs are "
                              + ", ".join(BUDGET_KNOBS) + " (structure knobs such as bifpn_repeats work too)")
    return out


def load_space(path: str | Path, base: SearchSpace | None = None) -> SearchSpace:
    """A space from a TOML file (on top of `base`, default: the default space)."""
    from featherface_tune.textfile import parse_toml, read_text

    p = Path(path)
    data = parse_toml(read_text(p, "space file"), f"space file {str(p)!r}")
    if isinstance(data.get("space"), dict):
        extra = sorted(set(data) - {"space"})
        if extra:
            raise ConfigError(f"space file {str(p)!r}: unexpected top-level key {extra[0]!r} next to [space]")
        data = data["space"]
    return apply_settings(base or default_space(), data, f"space file {str(p)!r}")


def apply_fixes(space: SearchSpace, items: Sequence[str]) -> SearchSpace:
    """`fix` items, `field=value`: pin a knob (or `ssh_channels` = one width or [p3, p4, p5]). An item
    that breaks a rule is a ConfigError about `fix`, the item its value."""
    for item in items:
        try:
            space = _apply_fix(space, item)
        except ConfigError as exc:
            if exc.field == "fix":
                raise
            # the config's rule without its own `knob=value` lead: the item already shows them
            key = item.partition("=")[0].strip()
            rule = re.sub(rf"^{re.escape(key)}(=\S+)?:?\s+", "", str(exc), count=1)
            raise ConfigError(field="fix", value=item, rule=rule) from None
    return space


def _apply_fix(space: SearchSpace, item: str) -> SearchSpace:
    if "=" not in item:
        raise ConfigError(field="fix", value=item, rule="expected field=value, e.g. neck_channels=52")
    key, _, text = item.partition("=")
    key = key.strip()
    value = parse_value(text)
    if key == "ssh_channels":
        if isinstance(value, list):
            if len(value) != 3:
                raise ConfigError(f"give one width or three (P3, P4, P5), got {value!r}")
            for k, v in zip(SSH_KNOBS, value):
                space = space.with_domain(k, fixed(_check_value(k, v, "")))
        else:
            for k in SSH_KNOBS:
                space = space.with_domain(k, fixed(_check_value(k, value, "")))
    elif key in KNOBS:
        if isinstance(value, list):
            raise ConfigError(field="fix", value=item, refs=("space",),
                              rule="takes one value; list a set of values in {space}")
        space = space.with_domain(key, fixed(_check_value(key, value, "")))
    else:
        raise ConfigError(field="fix", value=item, rule="unknown field; valid fields: ssh_channels, " + ", ".join(KNOBS))
    return space


def build_space(space_file: str | Path | None = None, fixes: Sequence[str] = ()) -> SearchSpace:
    """The default space, changed by a space file, then by `fixes` (`apply_fixes`)."""
    space = load_space(space_file) if space_file is not None else default_space()
    return apply_fixes(space, fixes)


# ---- the distance between two knob assignments (the `closest` objective, the repair) ---------------

# Width knobs change a size; switch knobs change what the network is. A width term is the relative
# change |a - b| / max(a, b) (0 when equal, always below 1) of a knob that applies in both (a CBAM ratio
# only where that CBAM is on in both, BiFPN repeats only where both use BiFPN, shuffle groups only
# where both shuffle); a switch costs SWITCH_COST, more than all nine width terms together can.
# (WIDTH_KNOBS and SWITCH_KNOBS: the config field table's kinds, `models.config.FIELDS`)
SWITCH_COST = 10.0
BUDGET_COLS = [WIDTH_KNOBS.index(k) for k in BUDGET_KNOBS]
RATIO_COLS = [WIDTH_KNOBS.index(k) for k in RATIO_KNOBS]


def _code(knob: str, v: Any) -> float:
    if knob in STR_KNOBS:
        return float(STR_KNOBS[knob].index(v))
    return float(v)


def encode(rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(width values, switch codes) of knob assignments; NaN where a width knob does not apply or is
    missing (a missing switch is -1)."""
    w = np.array([[float(r[k]) if k in r and applies(k, r) else np.nan for k in WIDTH_KNOBS] for r in rows],
                 dtype=np.float64).reshape(len(rows), len(WIDTH_KNOBS))
    c = np.array([[_code(k, r[k]) if k in r else -1.0 for k in SWITCH_KNOBS] for r in rows],
                 dtype=np.float64).reshape(len(rows), len(SWITCH_KNOBS))
    return w, c


def _masks(free: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([k not in free for k in WIDTH_KNOBS]), np.array([k not in free for k in SWITCH_KNOBS]))


def distance_terms(w: np.ndarray, c: np.ndarray, point: Mapping[str, Any], free: Sequence[str] = ()
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(switches, width sum) of every encoded row to `point`; knobs in `free` (or missing from the
    point) cost nothing."""
    (pw,), (pc,) = encode([point])
    wmask, cmask = _masks(tuple(free) + tuple(k for k in SWITCH_KNOBS if k not in point))
    with np.errstate(invalid="ignore"):
        rel = np.abs(w - pw) / np.maximum(w, pw)
    width = np.where(np.isnan(rel), 0.0, rel)[:, wmask].sum(axis=1)
    switches = (c[:, cmask] != pc[cmask]).sum(axis=1)
    return switches, width


def distance(a: Mapping[str, Any], b: Mapping[str, Any], free: Sequence[str] = ()) -> float:
    """The distance between two knob assignments: SWITCH_COST per changed switch + the width terms."""
    w, c = encode([a])
    sw, wd = distance_terms(w, c, b, free)
    return float(sw[0] * SWITCH_COST + wd[0])
