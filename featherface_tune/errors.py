"""The project's error types. Each carries a one-line message meant for the user."""

from __future__ import annotations

import contextlib
from pathlib import PurePath
from typing import Any, Callable, Iterator, Sequence


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (of the driver error a wrapper carries in `.orig`),
    at most `limit` characters; the exception's type name when the message is empty."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


_NO_VALUE: Any = object()


def shown_int(value: int) -> str:
    """An integer for a message: whole when short, else its sign and its length (str() of an
    integer of more than 4,300 digits raises ValueError)."""
    if value.bit_length() <= 64:
        return str(value)
    digits = int(value.bit_length() * 0.30103) + 1
    return f"<{'-' if value < 0 else ''}an integer of about {digits:,} digits>"


class FeatherFaceError(Exception):
    """Base class: a user-facing failure with a one-line message. `part` may name the input that
    caused it when several are merged (e.g. "preset", "config", "overrides" in `resolve_config`).

    An error about one argument carries it: `field` (the argument's Python name), `value` and `rule`
    (what the value breaks). `rule` may name other arguments as `{name}` for each name in `refs`.
    Built from those alone, the message names every argument as Python callers spell it
    (`warmup_epochs=9: must be at most epochs (5)`); the command layer names the flags instead
    (`shown_as(flag_of)`: `--warmup 9: must be at most --epochs (5)`), so the library never spells a
    flag."""

    exit_code = 2
    part: str | None = None

    def __init__(self, message: str = "", field: str | None = None, value: Any = _NO_VALUE, rule: str | None = None,
                 refs: Sequence[str] = ()):
        self.field, self.value, self.rule, self.refs = field, value, rule, tuple(refs)
        super().__init__(message or self.shown_as())

    def shown_as(self, name: str | Callable[[str], str] | None = None) -> str:
        """The message with each argument it names spelled by `name`: a callable from a field to its
        spelling (the command layer's flag), or one string for `field` alone ("--trials"); None spells
        them as Python does (`trials=5`). The message itself when it was not built from a rule."""
        if self.rule is None or self.field is None:
            return str(self)

        def spell(f: str) -> str:  # a speller with no spelling for a field leaves its Python name
            return (name(f) if callable(name) else name if f == self.field else None) or f

        lead = spell(self.field)
        rule = self.rule
        for ref in self.refs:  # only the declared names: a path in the rule holding "{x}" stays as it is
            rule = rule.replace("{" + ref + "}", spell(ref))
        if self.value is _NO_VALUE:
            return f"{lead}: {rule}"
        value, python = self.value, lead == self.field and not lead.startswith("-")  # trials=0 / --trials 0
        if isinstance(value, tuple) and not python:  # a flag taking several values: --input-size 0 5
            shown = " ".join(_shown(v) for v in value)
        elif isinstance(value, tuple):
            shown = f"({', '.join(_shown(v) for v in value)})"
        else:
            shown = _shown(value)
        return f"{lead}{'=' if python else ' '}{shown}: {rule}"

    def renamed(self, field: str) -> "FeatherFaceError":
        """The same error about `field` (e.g. a training option checked for the search's --proxy-*)."""
        if self.rule is None:
            return self
        return type(self)(field=field, value=self.value, rule=self.rule, refs=self.refs)


def _shown(value: Any) -> str:
    """A value in a message: text and paths quoted, integers of any length printable."""
    if isinstance(value, (str, PurePath)):
        return repr(str(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return shown_int(value)
    return str(value)


class ConfigError(FeatherFaceError, ValueError):
    """A model config breaks a rule of the architecture, or names an unknown field. `field` names
    the config field whose rule broke (None when the error is not about one field's value)."""


class InputError(FeatherFaceError):
    """A file, path or argument given by the user cannot be used."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt, so every `except
    KeyboardInterrupt` (Optuna failing the trial in flight, the search summary, training's
    checkpoint) handles both alike. Exit code 143 (128 + SIGTERM) instead of 130."""


_SIGNALLED: set[str] = set()  # "TERM" once SIGTERM arrived inside `sigterm_as_interrupt`
_INSIDE = [0]  # `sigterm_as_interrupt` blocks the main thread is in


def terminate_requested() -> bool:
    """Whether SIGTERM arrived inside the current `sigterm_as_interrupt` block: its `Terminated` may have
    been swallowed where Python ignores exceptions (a finalizer or weakref callback the garbage collector
    ran when the signal was handled), so long loops check this between their steps."""
    return _INSIDE[0] > 0 and "TERM" in _SIGNALLED


def interrupt_exit_code(exc: BaseException | None = None) -> int:
    """143 after SIGTERM, 130 after Ctrl-C; without `exc`, whether SIGTERM arrived in the current
    `sigterm_as_interrupt` block decides (for callers that only know "interrupted")."""
    if exc is not None:
        return 143 if isinstance(exc, Terminated) else 130
    return 143 if "TERM" in _SIGNALLED else 130


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread (elsewhere: no change)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        _SIGNALLED.add("TERM")
        raise Terminated()

    _SIGNALLED.clear()

    previous = signal.signal(signal.SIGTERM, _raise)
    _INSIDE[0] += 1
    try:
        yield
    finally:
        _INSIDE[0] -= 1
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
