"""The project's error types. Each carries a one-line message meant for the user."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (of the driver error a wrapper carries in `.orig`),
    at most `limit` characters; the exception's type name when the message is empty."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class FeatherFaceError(Exception):
    """Base class: a user-facing failure with a one-line message. `part` may name the input that
    caused it when several are merged (e.g. "preset", "config", "overrides" in `resolve_config`)."""

    exit_code = 2
    part: str | None = None


class ConfigError(FeatherFaceError, ValueError):
    """A model config breaks a rule of the architecture, or names an unknown field. `field` names
    the config field whose rule broke (None when the error is not about one field's value)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class InputError(FeatherFaceError):
    """A file, path or argument given by the user cannot be used."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt, so every `except
    KeyboardInterrupt` (Optuna failing the trial in flight, the search summary, training's
    checkpoint) handles both alike. Exit code 143 (128 + SIGTERM) instead of 130."""


_SIGNALLED: set[str] = set()  # "TERM" once SIGTERM arrived inside `sigterm_as_interrupt`


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
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
