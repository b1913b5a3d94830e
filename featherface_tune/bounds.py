"""Bounds on numbers where they enter the tool, so an absurd value gets a one-line error naming the
rule instead of reaching numpy, torch or the allocator. One place for every such limit."""

from __future__ import annotations

import math

from featherface_tune.errors import InputError

SEED_MAX = 2**32 - 1  # numpy's and Optuna's samplers take seeds in 0..2**32-1
MAX_PARAMS = 10**12  # parameter targets and tolerances: a trillion is beyond any face detector
MAX_BUILD_SIDE = 4096  # models are built and run (--check, gate --verify, train) at most 4096 px a side
MAX_BUILD_PARAMS = 500_000_000  # 2 GB of float32 weights: a thousand times FeatherFace


def check_seed(seed: int | None, option: str = "--seed") -> None:
    """Seeds feed numpy's and Optuna's generators, which take 0..2**32-1."""
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise InputError(f"{option} {seed}: must be in 0..{SEED_MAX} (2**32-1)")


def check_count(value: int, option: str, limit: int = MAX_PARAMS) -> None:
    """A parameter count given by the user: positive and at most `limit`."""
    if not 1 <= value <= limit:
        raise InputError(f"{option} {value}: must be a positive parameter count, at most {limit:,}")


def check_finite(value: float, option: str, minimum: float = 0.0) -> None:
    """A float option that must be finite and at least `minimum`."""
    if not (math.isfinite(value) and value >= minimum):
        raise InputError(f"{option} {value}: must be a finite number >= {minimum:g}")


def check_build_size(height: int, width: int, what: str) -> None:
    """A model built and run on an HxW input must fit in memory: at most MAX_BUILD_SIDE a side.
    `what` names the option and the reason, e.g. "--input-size with --check"."""
    if height > MAX_BUILD_SIDE or width > MAX_BUILD_SIDE:
        raise InputError(f"{what}: {height}x{width} is beyond the {MAX_BUILD_SIDE}x{MAX_BUILD_SIDE} input "
                         "the tool builds and runs a model on in memory (the analytic count alone has no limit)")


def check_build_params(params: int) -> None:
    """A model is built only when its weights fit in memory (the analytic count has no limit)."""
    if params > MAX_BUILD_PARAMS:
        raise InputError(f"the model has {params:,} parameters ({params * 4 / 1e9:,.1f} GB of float32 weights), "
                         f"beyond the {MAX_BUILD_PARAMS:,} the tool builds in memory; count it without building")
