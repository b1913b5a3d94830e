"""Parameter and MAC counting: analytic (from the config alone), in the conventions of other counting
tools, and cross-checks on a built model."""

from featherface_tune.counter.analytic import GROUPS, CountResult, count, count_params
from featherface_tune.counter.conventions import CONVENTIONS, countable, get_convention, reconcile

__all__ = ["CONVENTIONS", "GROUPS", "CountResult", "count", "count_params", "countable", "get_convention", "reconcile"]
