"""Shared CLI plumbing: consoles (data to stdout, diagnostics to stderr), error handling, and the
model-source options every command that takes a config uses."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import typer
from rich.text import Text
from typing_extensions import Annotated

from featherface_tune.errors import FeatherFaceError, Terminated, interrupt_exit_code, sigterm_as_interrupt
from featherface_tune.escaping import SafeConsole, printable

# Markup is off by default on both consoles: file names, study and preset names and any other
# user-supplied text print literally (a name holding "[/x]" or "[bold]" neither crashes rich nor
# restyles the line). Styled output uses `styled()` or rich Text objects.
# SafeConsole: no control character of a name reaches the terminal raw (an ESC, a bidi override).
out = SafeConsole(soft_wrap=True, markup=False, emoji=False)  # data; names print literally (no markup, no :emoji:)
err = SafeConsole(stderr=True, markup=False, emoji=False)  # diagnostics, progress

F = TypeVar("F", bound=Callable[..., Any])


def styled(label: str, style: str, message: str = "") -> Text:
    """`label` in `style`, then `message` printed literally (never parsed as markup)."""
    # printable: a message is one line whatever a name in it holds (a newline would start a forged line)
    return Text.assemble((label, style), " " + printable(message) if message else "")


def warn(message: str, label: str = "warning:") -> None:
    """A yellow `warning:` line on stderr; the message is printed literally."""
    err.print(styled(label, "yellow", message), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise. The message is printed
    literally (user-supplied names in it are never parsed as markup)."""
    err.print(styled("error:", "bold red", message), highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


# where a library argument's name differs from its command's parameter (the library names fields,
# the command layer names flags: `FeatherFaceError.shown_as`); a command's own parameter of the
# field's name wins
FIELD_OPTIONS = {"latency_threads": "threads", "latency_runtime": "runtime", "num_workers": "workers",
                 "out": "out_path", "warmup_epochs": "warmup", "space": "space_file",
                 "overrides": "set_"}


def flag_message(exc: FeatherFaceError) -> str:
    """The error's message, naming the running command's flag for each argument it names (the option
    whose parameter is that field); the library's own spelling for a field the command lacks."""
    try:  # Typer >= 0.2x carries its own copy of click (and of its context stack)
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older Typer on real click
        from click import get_current_context  # type: ignore[no-redef]

    ctx = get_current_context(silent=True)
    if exc.field is None or exc.rule is None or ctx is None:
        return str(exc)
    # an option by its long flag, a positional argument by its metavar (as the usage line shows it)
    flags = {p.name: (p.metavar or (p.name or "").upper()) if p.param_type_name == "argument"
             else next((o for o in p.opts if o.startswith("--")), None) for p in ctx.command.params}

    def flag_of(field: str) -> str:
        return flags.get(field) or flags.get(FIELD_OPTIONS.get(field, field)) or field

    return exc.shown_as(flag_of)


def handle_errors(fn: F) -> F:
    """Turn project errors and interrupts into one-line messages and non-zero exits. SIGTERM
    (`timeout`, CI cancel, `docker stop`) is handled like Ctrl-C, and exits 143 instead of 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with sigterm_as_interrupt():
            try:
                return fn(*args, **kwargs)
            except FeatherFaceError as exc:
                raise fail(flag_message(exc), exc.exit_code) from None
            except ImportError as exc:  # an optional install is missing: name it, no traceback
                from featherface_tune.extras import missing_extra

                hint = missing_extra(exc)  # (`extras.require` raises MissingExtra, a project error, above)
                if hint is None:
                    raise
                raise fail(f"{_command_path()} {hint}", 1) from None
            except KeyboardInterrupt as exc:
                what = "terminated" if isinstance(exc, Terminated) else "interrupted"
                raise fail(what, interrupt_exit_code(exc)) from None
            except (MemoryError, RuntimeError) as exc:  # this machine's memory: a bound the tool cannot know
                if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
                    raise
                raise fail("out of memory: the inputs need more memory than this machine has; "
                           "use smaller sizes, widths or batches", 1) from None

    return wrapper  # type: ignore[return-value]


def _command_path() -> str:
    """`featherface-tune train` (the running command, for messages), or the tool's name."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older Typer on real click
        from click import get_current_context  # type: ignore[no-redef,assignment]
    ctx = get_current_context(silent=True)
    return ctx.command_path if ctx is not None else "featherface-tune"


def _out_of_memory(exc: BaseException) -> bool:
    """torch's allocator failures arrive as RuntimeError ("DefaultCPUAllocator: can't allocate
    memory", "CUDA out of memory")."""
    text = str(exc).lower()
    return "can't allocate memory" in text or "out of memory" in text


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", help="Start from a named preset (see `featherface-tune presets`).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML or JSON file of config fields (may name its own `preset`).")]
SetOpt = Annotated[Optional[List[str]], typer.Option("--set", "-s", help="Override a field: field=value (repeatable), e.g. --set ssh_channels=[56,72,72].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
InputSizeOpt = Annotated[Tuple[int, int], typer.Option("--input-size", metavar="H W", help="Input height and width for MACs.")]
# search and report open the same storage by default (`tuner.storage.default_storage_url`, resolved when run)
StorageOpt = Annotated[Optional[str], typer.Option("--storage", help=(
    "Optuna storage: sqlite:///FILE, postgresql://..., mysql://..., journal:FILE (default: ./featherface-tune.db, "
    "the SQLite file in the working folder)."))]


def input_size(values: Tuple[int, int]) -> tuple[int, int]:
    from featherface_tune.bounds import check_input_side

    return check_input_side(*values, "--input-size")


def parse_tolerance(text: str, target: int) -> int:
    """`--tolerance`: `N` parameters or `N%` of the target (rounded down) -> absolute parameters, at
    most half the target (`tolerance.search_window`, which the API shares)."""
    from featherface_tune.tolerance import search_window

    return search_window(text, target, "--tolerance")


def resolve(preset: Optional[str], config: Optional[Path], sets: Optional[List[str]]):  # type: ignore[no-untyped-def]
    from featherface_tune.models.presets import resolve_config

    return resolve_config(preset, config, sets or [], overrides_source="--set")


# ---- where models run (resolved by featherface_tune.training.device, imported only when a command runs:
# importing it here would load torch for every command, --help and --version included) ----
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help=(
    "CPU threads for torch. Default: $OMP_NUM_THREADS, else the cores nothing else uses (usable cores less "
    "the load average, at least 1: busy threads slow each other down, measured 8-14x on a loaded 2-core "
    "machine). With several workers on one machine give each cores / workers."))]
AmpOpt = Annotated[str, typer.Option("--amp", help=(
    "Mixed precision: auto (bf16 on CUDA when supported, else fp16 with a grad scaler; off on CPU/MPS), off, "
    "bf16 or fp16."))]
