"""Torch-free pieces of a proxy run's description, so the tuner can check a search's options without
importing torch (featherface_tune.training.proxy, which trains, imports them from here)."""

from __future__ import annotations

from featherface_tune.errors import InputError

PRUNERS = ("median", "hyperband", "none")


def check_pruner(name: str) -> str:
    """A pruner name, or a one-line InputError listing the choices (checked before any work)."""
    if name not in PRUNERS:
        raise InputError(f"--pruner {name!r}: must be one of {', '.join(PRUNERS)}")
    return name
