"""The project's error types. Each carries a one-line message meant for the user."""


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


class BudgetViolation(FeatherFaceError):
    """A measured count lies outside its budget."""

    exit_code = 1
