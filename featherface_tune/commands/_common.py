"""Shared CLI plumbing: consoles (data to stdout, diagnostics to stderr), error handling, and the
model-source options every command that takes a config uses."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import typer
from rich.console import Console
from typing_extensions import Annotated

from featherface_tune.errors import FeatherFaceError

out = Console(soft_wrap=True)  # data
err = Console(stderr=True)  # diagnostics, progress

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    from rich.markup import escape

    # escaped: a message may hold brackets (e.g. featherface-tune[deploy]) that are not markup
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code=code)


def handle_errors(fn: F) -> F:
    """Turn project errors and interrupts into one-line messages and non-zero exits."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FeatherFaceError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", help="Start from a named preset (see `featherface-tune presets`).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML or JSON file of config fields (may name its own `preset`).")]
SetOpt = Annotated[Optional[List[str]], typer.Option("--set", "-s", help="Override a field: field=value (repeatable), e.g. --set ssh_channels=[56,72,72].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
InputSizeOpt = Annotated[Tuple[int, int], typer.Option("--input-size", metavar="H W", help="Input height and width for MACs.")]


def input_size(values: Tuple[int, int]) -> tuple[int, int]:
    from featherface_tune.errors import InputError

    h, w = values
    if h < 1 or w < 1:
        raise InputError(f"--input-size {h} {w}: height and width must be positive")
    return (h, w)


def resolve(preset: Optional[str], config: Optional[Path], sets: Optional[List[str]]):  # type: ignore[no-untyped-def]
    from featherface_tune.models.presets import resolve_config

    return resolve_config(preset, config, sets or [])
