"""A parameter tolerance as users write it: a count (`500`, "1,000") or a percent of the target
("0.5%"). The one parser behind `search --tolerance` and a budget file's `tolerance`; exact
(a Fraction), so 0.1% of 489,000 is 489, with no float rounding. Imports no torch."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from featherface_tune.bounds import MAX_PARAMS
from featherface_tune.errors import InputError

_COUNT = re.compile(r"\+?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)")  # commas only as thousands separators
_PERCENT = re.compile(r"\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")  # exponent bounded
SYNTAX = 'must be a parameter count (e.g. 500) or a percentage (e.g. "0.5%")'


@dataclass(frozen=True)
class Tolerance:
    """Allowed distance from a target: an absolute count, or a percent of the target."""

    value: Fraction
    percent: bool = False

    @classmethod
    def parse(cls, value: int | str) -> "Tolerance":
        """A tolerance from an int (a count) or a string ("500", "1,000", "0.5%"). Raises
        ValueError naming the broken rule; the caller says which input it was."""
        if isinstance(value, int) and not isinstance(value, bool):
            tol = cls(Fraction(value))
        elif isinstance(value, str):
            text = value.strip().replace("_", "")
            percent = text.endswith("%")
            number = text[:-1].strip() if percent else text
            if number.startswith("-"):
                raise ValueError("must not be negative")
            if not (_PERCENT if percent else _COUNT).fullmatch(number):
                raise ValueError(SYNTAX)
            try:
                tol = cls(Fraction(number.replace(",", "")), percent)
            except ValueError:  # beyond Python's 4,300-digit limit on int("...")
                raise ValueError(SYNTAX) from None
        else:
            raise ValueError(SYNTAX)
        if tol.value < 0:
            raise ValueError("must not be negative")
        if tol.percent and tol.value > 100:
            raise ValueError("a percentage must be at most 100%")
        if not tol.percent and tol.value > MAX_PARAMS:
            raise ValueError(f"must be at most {MAX_PARAMS:,} parameters")
        return tol

    def allowed(self, target: int) -> Fraction:
        """The allowed |count - target|, exactly."""
        return self.value * target / 100 if self.percent else self.value

    def absolute(self, target: int) -> int:
        """The allowed |count - target| in whole parameters (a percent rounded down)."""
        return math.floor(self.allowed(target))

    def describe(self) -> str:
        if self.percent:
            return f"{_fmt_fraction(self.value)}%"
        return f"{int(self.value):,}"


def _fmt_fraction(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):g}"


def search_window(value: object, target: int, name: str = "tolerance") -> int:
    """A search's tolerance (a count or a percent string) in whole parameters, at most half the target:
    a wider window is no budget (at +/-10 % the default space already holds 410 million configs, and
    the sampled search that follows takes minutes). InputError carries the argument `name` as its
    field, the value and the rule."""
    try:
        tol = Tolerance.parse(value)  # type: ignore[arg-type]  # anything else raises the syntax error
    except ValueError as exc:
        raise InputError(field=name, value=value, rule=str(exc)) from None
    allowed = tol.absolute(target)
    if 2 * allowed > target:
        raise InputError(field=name, value=value,
                         rule=f"{allowed:,} parameters is more than half the target {target:,}; a window that wide is no budget")
    return allowed
