"""How the command line looks and fails: flags shown without a `<bool>` value, `-h` beside `--help`,
and usage errors (unknown option, bad value, unknown command) as one line on stderr with exit 2 instead
of Typer's five-line box."""

from __future__ import annotations

import re
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

try:  # Typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover - older Typer on real click
    from click import exceptions as _click_exc  # type: ignore[no-redef]

# click < 8.2 has no NoArgsIsHelpError (it prints the help itself): an empty tuple catches nothing
_NO_ARGS_IS_HELP = getattr(_click_exc, "NoArgsIsHelpError", ())
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


# `[values]` in a help text would be read as rich markup and vanish; `[56,72,72]` and `[P3]` would not
_MARKUP_TAG = re.compile(r"(?<!\\)\[(?=[a-z#/@])")


def _without_flag_types(params: list[Any]) -> list[Any]:
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
            p.metavar = ""  # an empty type column; None would print `<bool>`
        if getattr(p, "help", None):
            p.help = _MARKUP_TAG.sub(r"\\[", p.help)
    return params


def reflow(doc: str | None) -> str | None:
    """A docstring as help text: paragraphs kept, the source's line breaks inside them joined (Typer
    would otherwise print them, breaking sentences mid-line)."""
    if not doc:
        return doc
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


class FlagCommand(TyperCommand):
    """A command whose on/off flags show no `<bool>` type in --help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))


class OneLineErrorsGroup(TyperGroup):
    """The root group: a usage error is one line naming the rule and where to read more."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,  # type: ignore[override]
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP:  # bare `featherface-tune`: the help page, as before
            return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
        except _click_exc.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "featherface-tune"
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
