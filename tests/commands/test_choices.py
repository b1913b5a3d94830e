"""Options that take one of a fixed set of values: typer checks them (and --help lists them), the
sets match the library's, and a bad value is a one-line usage error."""

from __future__ import annotations

from typing import get_args

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.commands import train


def test_train_choices_are_the_library_sets() -> None:
    from featherface_tune.training.device import AMP_MODES
    from featherface_tune.training.spec import OPTIMIZERS
    from featherface_tune.training.recipe import RECIPES

    assert get_args(train.RecipeName) == tuple(RECIPES)
    assert get_args(train.OptimizerName) == OPTIMIZERS
    assert get_args(train.AmpMode) == AMP_MODES


@pytest.mark.parametrize("option, bad, allowed", [
    ("--recipe", "offical", "'official', 'short'"),
    ("--optimizer", "adam", "'adamw', 'sgd'"),
    ("--amp", "fp8", "'auto', 'off', 'bf16', 'fp16'"),
    ("--optimizer", "SGD", "'adamw', 'sgd'"),  # the spellings stay exact, as the library's checks were
])
def test_a_bad_choice_is_one_line_exit_2(option: str, bad: str, allowed: str) -> None:
    r = CliRunner().invoke(app, ["train", "--data", "nowhere", option, bad])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and repr(bad) in lines[0] and allowed in lines[0], lines


def test_train_help_lists_the_choices() -> None:
    r = CliRunner().invoke(app, ["train", "--help"], terminal_width=80)
    assert r.exit_code == 0
    assert "official|short" in r.stdout and "adamw|sgd" in r.stdout and "auto|off|bf16|fp16" in r.stdout
