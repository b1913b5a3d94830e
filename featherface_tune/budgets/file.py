"""Budget files: finding them, loading and validating them, and writing a recorded baseline back.

Schema (TOML)::

    name = "featherface-official"          # optional, defaults to the file name
    description = "..."                    # optional
    convention = "numel"                   # optional: how params and MACs are counted (see `count --conventions`)

    [model]                                # required: a preset and/or a config file and/or fields
    preset = "featherface-official"
    config = "../configs/mine.toml"        # relative to the budget file
    neck_channels = 42                     # any FeatherFaceConfig field

    [params]                               # required
    target = 592371                        # exact target ...
    tolerance = 0                          # ... +- an absolute count or a percent string "0.5%"
    max = 600000                           # and/or an upper bound (min = ... a lower one)

    [macs]                                 # optional, same keys plus:
    input_size = [640, 640]                # required with [macs]
    dcn_macs = "full"                      # optional: "full" (default, every conv) or "dense"

    [baseline]                             # optional, written by `featherface-tune gate --update`
    input_size = [640, 640]
    dcn_macs = "full"                      # absent in old baselines: "dense"
    convention = "numel"                   # absent in old baselines: "numel"
    params = 592371
    macs = 1274888576
    [baseline.modules.backbone]
    params = 213072
    macs = 353433600

Every problem raises `BudgetFileError` naming the file, the key and (when found) its line.
"""

from __future__ import annotations

import os
import re
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from featherface_tune.atomic import atomic_write_text
from featherface_tune.budgets.schema import (
    Baseline, Bound, Budget, BudgetFileError, ModuleCost, Tolerance, line_of,
)
from featherface_tune.counter.analytic import GROUPS
from featherface_tune.models.config import DEFAULT_INPUT
from featherface_tune.counter.conventions import TRUE, Convention, countable, get_convention
from featherface_tune.errors import ConfigError, FeatherFaceError, InputError
from featherface_tune.models.config import FIELD_NAMES, FeatherFaceConfig
from featherface_tune.models.presets import resolve_config

TOP_KEYS = ("name", "description", "convention", "model", "params", "macs", "baseline")
BOUND_KEYS = ("target", "tolerance", "max", "min")
MACS_KEYS = BOUND_KEYS + ("input_size", "dcn_macs")
MODEL_KEYS = ("preset", "config") + FIELD_NAMES
BASELINE_KEYS = ("input_size", "dcn_macs", "convention", "params", "macs", "modules")
MODULE_KEYS = ("params", "macs")
BUDGET_DIR = "budgets"

_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")
_TOML_LINE = re.compile(r"at line (\d+)")


# ---- locating keys in the text (for messages and annotations) -------------------------------

def _split_dotted(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def key_lines(text: str) -> dict[str, int]:
    """Dotted key or table path -> 1-based line where it is defined (first definition wins)."""
    found: dict[str, int] = {}
    table: list[str] = []
    for i, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            table = _split_dotted(m.group(1))
            found.setdefault(".".join(table), i)
            continue
        m = _ASSIGN.match(line)
        if m:
            path = table + _split_dotted(m.group(1))
            found.setdefault(".".join(path), i)
    return found


def display_path(path: Path) -> str:
    """The path as the user will recognise it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path.resolve(), Path.cwd().resolve())
    except ValueError:  # another drive (Windows)
        return path.as_posix()
    return Path(rel).as_posix() if not rel.startswith("..") else path.as_posix()


def discover(root: Path | None = None) -> list[Path]:
    """Every `budgets/*.toml` under `root` (default: the working directory), sorted."""
    base = (root or Path.cwd()) / BUDGET_DIR
    return sorted(p for p in base.glob("*.toml") if p.is_file())


# ---- loading -------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, shown: str, lines: Mapping[str, int]) -> None:
        self.shown = shown
        self.lines = lines

    def error(self, key: str, message: str) -> BudgetFileError:
        return BudgetFileError(self.shown, message, key, line_of(self.lines, key))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _check_keys(ctx: _Ctx, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            where = f"[{prefix}]" if prefix else "the top level"
            raise ctx.error(f"{prefix}.{key}" if prefix else key,
                            f"unknown key in {where}; valid keys: {', '.join(allowed)}")


def _table(ctx: _Ctx, data: Mapping[str, Any], key: str, full: str) -> dict[str, Any]:
    v = data[key]
    if not isinstance(v, dict):
        raise ctx.error(full, f"must be a table, got {_type_name(v)} {v!r}")
    return v


def _count(ctx: _Ctx, key: str, v: Any) -> int:
    if not _is_int(v):
        raise ctx.error(key, f"must be an integer, got {_type_name(v)} {v!r}")
    if v < 0:
        raise ctx.error(key, f"must be non-negative, got {v}")
    return v


def _input_size(ctx: _Ctx, key: str, v: Any) -> tuple[int, int]:
    if not (isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)):
        raise ctx.error(key, f"must be [height, width] (two integers), got {v!r}")
    if v[0] < 1 or v[1] < 1:
        raise ctx.error(key, f"height and width must be positive, got {v!r}")
    return (v[0], v[1])


def _counting(ctx: _Ctx, keys: Mapping[str, str], table: Mapping[str, Any], default_dcn: str = "full") -> Convention:
    """The Convention a table names by its keys `convention` and `dcn_macs` (absent: numel and
    `default_dcn`), checked by `get_convention`; its error points at the file key (`keys`: field ->
    dotted key) of the field that breaks a rule."""
    try:
        return get_convention(table.get("convention", TRUE.name), table.get("dcn_macs", default_dcn))
    except ConfigError as exc:
        key = keys.get(exc.field or "convention", "convention")
        bare = type(exc)(field=exc.field, rule=exc.rule, refs=exc.refs)  # the rule, refs spelled as file keys
        rule = bare.shown_as(lambda f: keys.get(f, f)).partition(": ")[2]  # after "key: " (a key has no ": ")
        raise ctx.error(key, f"{exc.value!r}: {rule}" if exc.field in table else rule) from None


def _tolerance(ctx: _Ctx, key: str, v: Any) -> Tolerance:
    try:
        return Tolerance.parse(v)
    except ValueError as exc:
        raise ctx.error(key, f"{exc}, got {_type_name(v)} {v!r}") from None


def _bound(ctx: _Ctx, section: str, t: Mapping[str, Any]) -> Bound:
    target = _count(ctx, f"{section}.target", t["target"]) if "target" in t else None
    maximum = _count(ctx, f"{section}.max", t["max"]) if "max" in t else None
    minimum = _count(ctx, f"{section}.min", t["min"]) if "min" in t else None
    if "tolerance" in t:
        if target is None:
            raise ctx.error(f"{section}.tolerance", "a tolerance needs a `target` to apply to")
        tol = _tolerance(ctx, f"{section}.tolerance", t["tolerance"])
    else:
        tol = Tolerance(Fraction(0))
    if target is None and maximum is None:
        raise ctx.error(section, "needs `target` (with an optional `tolerance`) or `max`")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ctx.error(f"{section}.min", f"min {minimum:,} is above max {maximum:,}: no count can pass")
    if target is not None and maximum is not None and target > maximum:
        raise ctx.error(f"{section}.target", f"target {target:,} is above max {maximum:,}: contradictory bounds")
    if target is not None and minimum is not None and target < minimum:
        raise ctx.error(f"{section}.target", f"target {target:,} is below min {minimum:,}: contradictory bounds")
    if target is not None:
        slack = tol.allowed(target)
        lo, hi = target - slack, target + slack
        if (maximum is not None and lo > maximum) or (minimum is not None and hi < minimum):
            raise ctx.error(f"{section}.tolerance", "target ± tolerance lies outside min..max: no count can pass")
    return Bound(target=target, tolerance=tol, maximum=maximum, minimum=minimum)


def _model(ctx: _Ctx, m: Mapping[str, Any], budget_dir: Path) -> tuple[FeatherFaceConfig, str]:
    _check_keys(ctx, m, MODEL_KEYS, "model")
    preset = m.get("preset")
    config = m.get("config")
    fields = {k: v for k, v in m.items() if k in FIELD_NAMES}
    if preset is None and config is None and not fields:
        raise ctx.error("model", "needs a `preset`, a `config` file path, or config fields")
    if preset is not None and not isinstance(preset, str):
        raise ctx.error("model.preset", f"must be a string, got {_type_name(preset)} {preset!r}")
    if config is not None and not isinstance(config, str):
        raise ctx.error("model.config", f"must be a path string, got {_type_name(config)} {config!r}")
    try:
        cfg = resolve_config(preset, budget_dir / config if config is not None else None, fields,
                             overrides_source="[model]")
    except FeatherFaceError as exc:
        where = {"preset": "model.preset", "config": "model.config"}.get(exc.part or "")
        where = where or (f"model.{exc.field}" if isinstance(exc, ConfigError) and exc.field else "model")
        raise ctx.error(where, str(exc)) from None
    source = [f"preset {preset}"] if preset is not None else []
    if config is not None:
        source.append(f"config {config}")
    if fields:
        source.append(", ".join(f"{k}={v!r}" for k, v in fields.items()))
    return cfg, " + ".join(source)


def _baseline(ctx: _Ctx, b: Mapping[str, Any], default_size: tuple[int, int]) -> Baseline:
    _check_keys(ctx, b, BASELINE_KEYS, "baseline")
    size = _input_size(ctx, "baseline.input_size", b["input_size"]) if "input_size" in b else default_size
    # a numel baseline without dcn_macs was written before "full"; other conventions have their own
    counting = _counting(ctx, {"convention": "baseline.convention", "dcn_macs": "baseline.dcn_macs"}, b,
                         default_dcn="dense" if b.get("convention", TRUE.name) == TRUE.name else "full")
    params = _count(ctx, "baseline.params", b["params"]) if "params" in b else None
    macs = _count(ctx, "baseline.macs", b["macs"]) if "macs" in b else None
    if "modules" not in b:
        raise ctx.error("baseline.modules", "missing: a baseline records the per-module breakdown "
                                            "(the gate's update writes it)")
    mods_t = _table(ctx, b, "modules", "baseline.modules")
    modules: dict[str, ModuleCost] = {}
    for name, entry in mods_t.items():
        key = f"baseline.modules.{name}"
        if name not in GROUPS:
            raise ctx.error(key, f"unknown module; valid modules: {', '.join(GROUPS)}")
        if not isinstance(entry, dict):
            raise ctx.error(key, f"must be a table {{ params = N, macs = N }}, got {_type_name(entry)} {entry!r}")
        _check_keys(ctx, entry, MODULE_KEYS, key)
        if "params" not in entry:
            raise ctx.error(f"{key}.params", "missing")
        modules[name] = ModuleCost(
            params=_count(ctx, f"{key}.params", entry["params"]),
            macs=_count(ctx, f"{key}.macs", entry["macs"]) if "macs" in entry else None,
        )
    return Baseline(input_size=size, counting=counting, modules=modules, params=params, macs=macs)


def parse_budget(text: str, path: Path) -> Budget:
    """A `Budget` from the text of `path` (the path names it in errors and anchors `model.config`)."""
    shown = display_path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_LINE.search(str(exc))
        raise BudgetFileError(shown, f"not valid TOML: {exc}", "", int(m.group(1)) if m else None) from None
    except RecursionError:
        raise BudgetFileError(shown, "arrays or tables nested too deeply to read") from None
    lines = key_lines(text)
    ctx = _Ctx(shown, lines)
    _check_keys(ctx, data, TOP_KEYS, "")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise ctx.error("name", f"must be a non-empty string, got {_type_name(name)} {name!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ctx.error("name", f"must be one line without control characters, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ctx.error("description", f"must be a string, got {_type_name(description)} {description!r}")
    if "model" not in data:
        raise ctx.error("model", "missing: a budget needs a [model] table (preset, config path or fields)")
    counting = _counting(ctx, {"convention": "convention"}, {k: data[k] for k in ("convention",) if k in data})
    cfg, source = _model(ctx, _table(ctx, data, "model", "model"), path.parent)
    try:
        countable(counting, cfg)
    except ConfigError as exc:
        raise ctx.error("convention", str(exc)) from None
    if "params" not in data:
        raise ctx.error("params", "missing: a budget needs a [params] table with `target` or `max`")
    p_t = _table(ctx, data, "params", "params")
    _check_keys(ctx, p_t, BOUND_KEYS, "params")
    params = _bound(ctx, "params", p_t)
    macs = None
    size = DEFAULT_INPUT
    if "macs" in data:
        m_t = _table(ctx, data, "macs", "macs")
        _check_keys(ctx, m_t, MACS_KEYS, "macs")
        if "input_size" not in m_t:
            raise ctx.error("macs.input_size", "missing: MACs depend on the input, state it as [height, width]")
        size = _input_size(ctx, "macs.input_size", m_t["input_size"])
        counting = _counting(ctx, {"convention": "convention", "dcn_macs": "macs.dcn_macs"},
                             {"convention": counting.name, **{k: m_t[k] for k in ("dcn_macs",) if k in m_t}})
        macs = _bound(ctx, "macs", m_t)
    baseline = None
    if "baseline" in data:
        baseline = _baseline(ctx, _table(ctx, data, "baseline", "baseline"), size)
    return Budget(path=path, name=name, description=description, config=cfg, params=params, macs=macs,
                  input_size=size, counting=counting, baseline=baseline, model_source=source,
                  display=shown, lines=dict(lines))


def load_budget(path: str | Path) -> Budget:
    """Read and validate one budget file."""
    from featherface_tune.textfile import read_text

    p = Path(path)
    try:
        text = read_text(p, "budget file")
    except InputError as exc:  # "budget file 'x' is UTF-16 text ..." -> "is UTF-16 text ..."
        raise BudgetFileError(display_path(p), str(exc).split(f"{str(p)!r} ", 1)[-1]) from None
    return parse_budget(text, p)


# ---- writing the baseline back ---------------------------------------------------------------

def _baseline_table(baseline: Mapping[str, Any]) -> Any:
    """`baseline` as a tomlkit table: scalars first, then one `[baseline.modules.NAME]` per module."""
    import tomlkit

    table = tomlkit.table()
    for key, value in baseline.items():
        if key != "modules":
            table.add(key, value)
    if "modules" in baseline:
        modules = tomlkit.table(is_super_table=True)
        for name, entry in baseline["modules"].items():
            sub = tomlkit.table()
            for k, v in entry.items():
                sub.add(k, v)
            modules.add(name, sub)
        table.add("modules", modules)
    return table


def write_baseline(path: str | Path, baseline: Mapping[str, Any]) -> bool:
    """Replace the file's `[baseline]` with `baseline`, keeping the rest of the file byte for byte:
    comments, order, inline tables and formatting (tomlkit round-trips TOML). A baseline written
    any way (tables, an inline `baseline = {...}`, dotted keys) is removed and the new one appended
    as tables at the end. Returns whether the file changed."""
    import tomlkit
    from featherface_tune.textfile import read_text

    p = Path(path)
    text = read_text(p, "budget file")
    original = tomllib.loads(text)
    if original.get("baseline") == dict(baseline):
        return False
    doc = tomlkit.parse(text)
    if "baseline" in doc:
        del doc["baseline"]
    body = tomlkit.dumps(doc).rstrip("\n")
    new_text = (body + "\n\n" if body else "") + tomlkit.dumps({"baseline": _baseline_table(baseline)})
    reparsed = tomllib.loads(new_text)
    rest = {k: v for k, v in original.items() if k != "baseline"}
    if {k: v for k, v in reparsed.items() if k != "baseline"} != rest or reparsed.get("baseline") != dict(baseline):
        raise InputError(f"budget file {str(p)!r}: cannot record the baseline without changing the "
                         "rest of the file; edit its [baseline] by hand")  # pragma: no cover - tomlkit guard
    if new_text == text:
        return False
    atomic_write_text(p, new_text, "budget file")  # refuses a symbolic link or a read-only file
    return True
