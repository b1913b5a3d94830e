"""Parameter and MAC counting: analytic (from the config alone) and cross-checks on a built model."""

from featherface_tune.counter.analytic import GROUPS, CountResult, count, count_params

__all__ = ["GROUPS", "CountResult", "count", "count_params"]
