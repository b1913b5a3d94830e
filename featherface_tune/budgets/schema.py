"""Budget records: what a budget file says, as frozen dataclasses (no I/O, no counting here).

A `Bound` is an exact target with a tolerance (absolute or percent of the target) and/or an upper
(and lower) limit. A `Budget` holds the model it applies to, a params bound, an optional MACs bound at
a stated input size, and an optional recorded per-module baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Optional

from featherface_tune.counter.conventions import TRUE, Convention, CountedIn
from featherface_tune.errors import InputError
from featherface_tune.models.config import DEFAULT_INPUT, FeatherFaceConfig
from featherface_tune.tolerance import Tolerance  # the one parser of a tolerance; re-exported here


class BudgetFileError(InputError):
    """A budget file is missing, unreadable or breaks the schema (exit code 2).

    Carries the file, the offending key (dotted, e.g. `params.tolerance`) and, when it could be
    found, the 1-based line of that key, so every presentation can point at it.
    """

    def __init__(self, path: str, message: str, key: str = "", line: Optional[int] = None) -> None:
        self.path = path
        self.key = key
        self.line = line
        self.detail = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


def line_of(lines: Mapping[str, int], key: str) -> int | None:
    """Line of `key`, else of its nearest enclosing table or key that is in the text."""
    parts = key.split(".") if key else []
    while parts:
        hit = lines.get(".".join(parts))
        if hit:
            return hit
        parts.pop()
    return None


@dataclass(frozen=True)
class Bound:
    """A bound on one measured count. At least one of `target` / `maximum` is set."""

    target: Optional[int] = None
    tolerance: Tolerance = field(default_factory=lambda: Tolerance(Fraction(0)))
    maximum: Optional[int] = None
    minimum: Optional[int] = None

    def contains(self, measured: int) -> bool:
        if self.maximum is not None and measured > self.maximum:
            return False
        if self.minimum is not None and measured < self.minimum:
            return False
        if self.target is not None and abs(measured - self.target) > self.tolerance.allowed(self.target):
            return False
        return True

    def delta(self, measured: int) -> int:
        """measured - target, or measured - maximum (negative: headroom) when there is no target."""
        if self.target is not None:
            return measured - self.target
        if self.maximum is not None:
            return measured - self.maximum
        return measured - (self.minimum or 0)

    def describe(self) -> str:
        parts = []
        if self.target is not None:
            parts.append(f"{self.target:,} ± {self.tolerance.describe()}")
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"{self.minimum:,}..{self.maximum:,}")
        elif self.maximum is not None:
            parts.append(f"≤ {self.maximum:,}")
        elif self.minimum is not None:
            parts.append(f"≥ {self.minimum:,}")
        return ", ".join(parts)

    def to_json(self) -> dict:
        d: dict = {}
        if self.target is not None:
            d["target"] = self.target
            tol = self.tolerance
            d["tolerance"] = tol.describe() if tol.percent else int(tol.value)
        if self.maximum is not None:
            d["max"] = self.maximum
        if self.minimum is not None:
            d["min"] = self.minimum
        return d


@dataclass(frozen=True)
class ModuleCost:
    params: int
    macs: Optional[int] = None


@dataclass(frozen=True)
class Baseline(CountedIn):
    """A recorded per-module breakdown (what `gate --update` writes)."""

    input_size: tuple[int, int]
    counting: Convention  # how its figures were counted (`convention` and `dcn_macs` in the file)
    modules: dict[str, ModuleCost]
    params: Optional[int] = None
    macs: Optional[int] = None


@dataclass(frozen=True)
class Budget(CountedIn):
    path: Path
    name: str
    description: str
    config: FeatherFaceConfig
    params: Bound
    macs: Optional[Bound] = None
    input_size: tuple[int, int] = DEFAULT_INPUT
    counting: Convention = TRUE  # how every figure is counted (`convention` and `dcn_macs` in the file)
    baseline: Optional[Baseline] = None
    model_source: str = ""  # e.g. "preset featherface-official + neck_channels=42"
    display: str = ""  # the path as shown to the user (relative to the working directory)
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> 1-based line in the file

    @property
    def shown(self) -> str:
        return self.display or self.path.as_posix()

    def line(self, *keys: str) -> int:
        """Line of the first of `keys` present in the file (then its enclosing table), else 1."""
        for key in keys:
            if key in self.lines:
                return self.lines[key]
        for key in keys:
            hit = line_of(self.lines, key)  # the exact keys are absent: this finds enclosing tables
            if hit:
                return hit
        return 1
