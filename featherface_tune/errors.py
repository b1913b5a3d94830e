"""The project's error types. Each carries a one-line message meant for the user."""


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

