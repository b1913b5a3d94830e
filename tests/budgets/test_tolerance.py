"""The one tolerance parser: `search --tolerance` and a budget file's `tolerance` read alike."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from featherface_tune.bounds import MAX_PARAMS
from featherface_tune.budgets.file import parse_budget
from featherface_tune.budgets.schema import BudgetFileError
from featherface_tune.commands.search import parse_tolerance
from featherface_tune.errors import InputError
from featherface_tune.tolerance import Tolerance


@pytest.mark.parametrize("given, value, percent", [
    (0, 0, False), (500, 500, False), ("500", 500, False), ("1,000", 1000, False), ("1_000", 1000, False),
    ("5%", 5, True), (" 0.1 % ", Fraction(1, 10), True), (".5%", Fraction(1, 2), True),
    ("1e-1%", Fraction(1, 10), True), ("100%", 100, True), (str(MAX_PARAMS), MAX_PARAMS, False),
])
def test_parse(given, value, percent):
    assert Tolerance.parse(given) == Tolerance(Fraction(value), percent)


@pytest.mark.parametrize("given, rule", [
    (-5, "not be negative"), ("-5", "not be negative"), ("-0.5%", "not be negative"),
    ("abc", "parameter count"), ("inf%", "percentage"), ("0,5%", "percentage"), ("1,00", "parameter count"),
    ("1.5", "parameter count"), ("1/2%", "percentage"), ("1e999999999%", "percentage"), ("9" * 5000, "count"),
    (0.5, "percentage"), (True, "percentage"), (None, "percentage"),
    ("100.5%", "at most 100%"), ("1e300%", "at most 100%"), (MAX_PARAMS + 1, f"at most {MAX_PARAMS:,}"),
])
def test_parse_rejects(given, rule):
    with pytest.raises(ValueError, match=rule):
        Tolerance.parse(given)


def test_search_takes_the_floor_exactly():
    assert parse_tolerance("0.1%", 489_000) == 489
    assert parse_tolerance("0.3%", 1_000) == 3  # exact: no float rounding to correct
    assert parse_tolerance("1%", 99) == 0
    assert parse_tolerance("2,500", 489_000) == 2500
    with pytest.raises(InputError, match=r"^--tolerance '-3': must not be negative$"):
        parse_tolerance("-3", 489_000)


@pytest.mark.parametrize("given, words", [
    ("-5", "must not be negative, got integer -5"), ('"150%"', "at most 100%"),
    (str(MAX_PARAMS + 1), "at most 1,000,000,000,000 parameters"),
])
def test_budget_file_uses_the_same_rules(given, words):
    text = f'[model]\npreset = "featherface-official"\n[params]\ntarget = 5\ntolerance = {given}\n'
    with pytest.raises(BudgetFileError, match=words) as info:
        parse_budget(text, Path("b.toml"))
    assert info.value.key == "params.tolerance" and info.value.line == 5


def test_budget_file_reads_a_count_string_like_the_cli():
    text = '[model]\npreset = "featherface-official"\n[params]\ntarget = 5000\ntolerance = "1,000"\n'
    assert parse_budget(text, Path("b.toml")).params.tolerance == Tolerance(Fraction(1000))


def test_the_parser_imports_no_torch():
    code = "import sys, featherface_tune.tolerance; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
