"""The FeatherFace config: one frozen dataclass that is the single source of truth for a model.

Every architectural rule is checked when a config is made; a violation raises `ConfigError` with a
one-line message naming the field, the value, the rule and the nearest valid values.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from featherface_tune.errors import ConfigError, InputError

NECKS = ("bifpn", "fpn")
DEFAULT_INPUT = (640, 640)  # (height, width) of every MAC figure unless another is asked for
SHUFFLES = ("block", "plain", "none")
MAX_BACKBONE_WIDTH = 4.0


@dataclass(frozen=True)
class FeatherFaceConfig:
    """A FeatherFace-family detector. Defaults are the official FeatherFace code."""

    backbone_width: float = 0.25
    backbone_cbam: bool = True
    neck: str = "bifpn"
    neck_channels: int = 64
    bifpn_repeats: int = 3
    neck_cbam: bool = True
    backbone_cbam_reduction: int = 16
    neck_cbam_reduction: int = 16
    ssh_channels: int | tuple[int, int, int] = 64
    ssh_deformable: bool = True
    shuffle: str = "block"
    shuffle_groups: int = 2
    anchors_per_cell: int = 2
    landmarks: bool = True

    def __post_init__(self) -> None:
        from featherface_tune.bounds import check_config_numbers

        check_config_numbers(self.__dict__)  # before float() or any sum: no OverflowError from any source
        ssh = self.ssh_channels
        if isinstance(ssh, (list, tuple)):
            levels = tuple(ssh)
            # canonical form: one int when all levels agree (compared, not hashed: a level may be a list)
            one = len(levels) == 3 and _is_int(levels[0]) and levels[0] == levels[1] == levels[2]
            object.__setattr__(self, "ssh_channels", levels[0] if one else levels)
        if _is_int(self.backbone_width):
            object.__setattr__(self, "backbone_width", float(self.backbone_width))
        validate(self)

    # ---- derived quantities -------------------------------------------------------------
    @property
    def ssh_widths(self) -> tuple[int, int, int]:
        """SSH output width of each level (P3, P4, P5)."""
        s = self.ssh_channels
        return (s, s, s) if isinstance(s, int) else tuple(s)  # type: ignore[return-value]

    @property
    def backbone_channels(self) -> tuple[int, int, int]:
        """Output widths of the three backbone stages (64/128/256 at width 0.25)."""
        return backbone_channels(self.backbone_width)

    def replace(self, **changes: Any) -> "FeatherFaceConfig":
        """A copy with some fields changed (validated like any new config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields, TOML/JSON ready (SSH widths as int or list)."""
        d = dataclasses.asdict(self)
        if isinstance(d["ssh_channels"], tuple):
            d["ssh_channels"] = list(d["ssh_channels"])
        return d


@lru_cache(maxsize=256)
def backbone_channels(width: float) -> tuple[int, int, int]:
    """Output widths of MobileNetV1's three stages at a width multiplier (a multiple of 1/32)."""
    m = round(width * 32)
    return (8 * m, 16 * m, 32 * m)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(FeatherFaceConfig))


@dataclass(frozen=True)
class Field:
    """One config field as every tool that varies configs sees it (`FIELDS`).

    `kind`: "switch" (changes what the network is: a block on or off, a type) or "width" (changes a
    size). `type`: bool, int, float or str (`choices` lists a str field's values; `least` is an int's
    smallest valid value where it applies). `space`: its domain in the default search space, as a space
    file writes it (a value: fixed; a list: choices; {"min", "max", "step"}: a range). `budget`: the
    solver varies it per structure (its cost is a search term of its own, `models.arch.TERMS`).
    `per_level`: one value per level (P3, P4, P5), three knobs in the space. `on`/`when`: it applies
    only while switch `on` takes a value in `when`; elsewhere it takes `off` (required by the config
    when `forced`, else a canonical value the search records)."""

    name: str
    kind: str
    type: type
    space: Any
    choices: tuple[str, ...] = ()
    least: int | None = None
    budget: bool = False
    per_level: bool = False
    on: str | None = None
    when: tuple[Any, ...] = ()
    off: Any = None
    forced: bool = False


# Every field of FeatherFaceConfig, in the order a search samples them: a field's switch (`on`) comes
# before it; the budget fields last. The validation's generic checks (type, choices, least value,
# context), the search space's knobs, domains and context rules, and the solver's distance read this
# table; a new field is one entry here (its own rules, if any, in `validate`).
FIELDS: tuple[Field, ...] = (
    Field("backbone_width", "width", float, 0.25),
    Field("backbone_cbam", "switch", bool, [True, False]),
    Field("neck", "switch", str, ["bifpn", "fpn"], choices=NECKS),
    Field("bifpn_repeats", "width", int, {"min": 1, "max": 4}, least=1, on="neck", when=("bifpn",), off=0,
          forced=True),
    Field("neck_channels", "width", int, {"min": 16, "max": 128}, least=1),
    Field("neck_cbam", "switch", bool, [True, False]),
    Field("ssh_deformable", "switch", bool, [True, False]),
    Field("shuffle", "switch", str, ["block", "plain", "none"], choices=SHUFFLES),
    Field("shuffle_groups", "width", int, 2, least=1, on="shuffle", when=("block", "plain"), off=2),
    Field("anchors_per_cell", "switch", int, 2, least=1),
    Field("landmarks", "switch", bool, True),
    Field("ssh_channels", "width", int, {"min": 16, "max": 128, "step": 4}, budget=True, per_level=True),
    Field("backbone_cbam_reduction", "width", int, [4, 8, 16, 32], least=1, budget=True, on="backbone_cbam",
          when=(True,), off=16),
    Field("neck_cbam_reduction", "width", int, [4, 8, 16, 32], least=1, budget=True, on="neck_cbam",
          when=(True,), off=16),
)
FIELD = {f.name: f for f in FIELDS}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fail(name: str, value: Any, rule: str, nearest: Sequence[Any] | None = None) -> None:
    msg = f"{name}={value!r} {rule}" if not _is_int(value) else f"{name}={value} {rule}"
    if nearest:
        msg += "; nearest valid: " + ", ".join(str(v) for v in nearest)
    raise ConfigError(msg, field=name.split("[", 1)[0])


def _nearest_multiples(v: int, m: int, lo: int = 1) -> list[int]:
    down = (v // m) * m
    cands = [c for c in (down, down + m) if c >= lo]
    return cands or [max(lo, m)]


def _nearest_divisors(n: int, g: int, reach: int = 4096) -> list[int]:
    """The divisors of `n` nearest `g` from below and above, looking at most `reach` values each way
    (n itself when no divisor above lies within reach): bounded work for any width."""
    below = next((d for d in range(min(g - 1, n), max(0, g - 1 - reach), -1) if n % d == 0), None)
    above = next((d for d in range(g + 1, min(n, g + reach) + 1) if n % d == 0), None)
    if above is None and n > g:
        above = n
    return ([below] if below else []) + ([above] if above else [])


def validate(cfg: FeatherFaceConfig) -> None:
    """Check every rule of the architecture; raise ConfigError on the first broken one."""
    for f in FIELDS:  # types and choices first: the rules below compare values
        v = getattr(cfg, f.name)
        if f.type is bool and not isinstance(v, bool):
            _fail(f.name, v, "must be true or false")
        if f.type is int and not f.per_level and not _is_int(v):
            _fail(f.name, v, "must be an integer")
        if f.choices and v not in f.choices:
            _fail(f.name, v, f"must be one of {', '.join(f.choices)}")
    w = cfg.backbone_width
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
        _fail("backbone_width", w, "must be a positive number", [0.25])
    if w > MAX_BACKBONE_WIDTH:
        _fail("backbone_width", w, f"must be at most {MAX_BACKBONE_WIDTH:g} (MobileNetV1 at {MAX_BACKBONE_WIDTH:g}x "
              "already has stages of 1,024 to 4,096 channels)", [MAX_BACKBONE_WIDTH])
    if abs(w * 32 - round(w * 32)) > 1e-9 or round(w * 32) < 1:
        k = max(1, math.floor(w * 32))
        _fail("backbone_width", w,
              "must be a multiple of 1/32 (MobileNetV1's 32-channel stem needs whole channels)",
              sorted({k / 32, (k + 1) / 32}))
    for f in FIELDS:  # the least value where a field applies; its `off` value where it must take it
        if f.least is None:
            continue
        v = getattr(cfg, f.name)
        switch = getattr(cfg, f.on) if f.on is not None else None
        applies = f.on is None or switch in f.when
        if not applies and f.forced:
            if v != f.off:
                _fail(f.name, v, f"only applies to {f.on}={f.when[0]!r}; with {f.on}={switch!r} "
                      f"it must be {f.off!r}", [f.off])
        elif v < f.least and (applies or not f.forced):
            rule = f"must be at least {f.least}" + (f" with {f.on}={f.when[0]!r}" if f.forced else "")
            # nearest: the least value, and the default space's value where the space fixes the field
            _fail(f.name, v, rule, sorted({f.least, f.space if _is_int(f.space) else f.least}))
    for name, on, width in (
        ("backbone_cbam_reduction", cfg.backbone_cbam, min(cfg.backbone_channels)),
        ("neck_cbam_reduction", cfg.neck_cbam, cfg.neck_channels),
    ):
        r = getattr(cfg, name)
        if on and width // r < 1:
            _fail(name, r,
                  f"leaves the CBAM channel-gate MLP with {width}//{r} = 0 hidden units "
                  f"(needs at least 1 at width {width})", [width])
    ssh = cfg.ssh_channels
    items: list[tuple[str, Any]]
    if _is_int(ssh):
        items = [("ssh_channels", ssh)]
    elif isinstance(ssh, tuple) and len(ssh) == 3:
        items = [(f"ssh_channels[{i}]", v) for i, v in enumerate(ssh)]
    else:
        _fail("ssh_channels", ssh, "must be one integer or a list of three (P3, P4, P5)")
    for name, v in items:
        if not _is_int(v):
            _fail(name, v, "must be an integer")
        if v < 4:
            _fail(name, v, "must be a positive multiple of 4 (SSH splits it 1/2+1/4+1/4)", [4])
        if v % 4:
            _fail(name, v, "must be a multiple of 4 (SSH splits it 1/2+1/4+1/4)",
                  _nearest_multiples(v, 4, 4))
    if cfg.shuffle != "none":
        for name, v in items:
            if v % cfg.shuffle_groups:
                _fail("shuffle_groups", cfg.shuffle_groups,
                      f"must divide the SSH width {name}={v} (channel shuffle splits it into "
                      "equal groups)", _nearest_divisors(v, cfg.shuffle_groups))


# ---- building configs from outside data ---------------------------------------------------

def from_mapping(data: Mapping[str, Any], base: FeatherFaceConfig | None = None,
                 source: str = "config") -> FeatherFaceConfig:
    """Config from a dict of fields (on top of `base`); unknown fields are an error."""
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"{source}: unknown field {unknown[0]!r}; valid fields: "
                          + ", ".join(FIELD_NAMES))
    try:
        return dataclasses.replace(base or FeatherFaceConfig(), **dict(data))
    except TypeError as exc:  # pragma: no cover - dataclasses guards the names above
        raise ConfigError(f"{source}: {exc}") from None


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value (`52`, `[56,72,72]`, `true`), else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()
    except ValueError:  # an integer of more than 4,300 digits (Python's int-from-text limit)
        raise ConfigError(f"value {text[:40]!r}...: an integer too long to read") from None
    except RecursionError:
        raise ConfigError(f"value {text[:40]!r}...: arrays nested too deeply") from None


def parse_overrides(items: Sequence[str], source: str = "overrides") -> dict[str, Any]:
    """`field=value` strings to a dict; a missing `=` or unknown field is an error naming `source`
    (the argument that gave them; the command layer passes its flag)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{source} {item!r}: expected field=value, e.g. neck_channels=52")
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in FIELD_NAMES:
            raise ConfigError(f"{source}: unknown field {key!r}; valid fields: " + ", ".join(FIELD_NAMES))
        out[key] = parse_value(value)
    return out


def apply_overrides(base: FeatherFaceConfig | None, overrides: Sequence[str] | Mapping[str, Any],
                    source: str = "overrides") -> FeatherFaceConfig:
    """`base` (the official config if None) with overrides applied: `field=value` strings or a dict."""
    extra = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides, source)
    return from_mapping(extra, base, source=source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Fields from a TOML or JSON file. A `[model]` table, if present, holds the fields."""
    from featherface_tune.textfile import parse_json, parse_toml, read_text

    p = Path(path)
    text = read_text(p, "config file")
    shown = f"config file {str(p)!r}"
    data = parse_json(text, shown) if p.suffix.lower() == ".json" else parse_toml(text, shown)
    if not isinstance(data, dict):
        raise InputError(f"config file {str(p)!r} must hold a table of config fields")
    if isinstance(data.get("model"), dict):
        data = data["model"]
    return data


def to_toml(cfg: FeatherFaceConfig, header: str = "") -> str:
    """The config as TOML text that `--config` accepts."""
    import tomli_w

    text = tomli_w.dumps(cfg.to_dict())
    return (header.rstrip() + "\n" if header else "") + text
