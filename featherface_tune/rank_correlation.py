"""Rank agreement between two scorings of the same items (Kendall tau-b, Spearman rho, bootstrap
intervals): calibration compares proxy and reference training with them, the latency table its
predictions with measurements. Pure statistics: numpy, and scipy on use."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b between two score lists (ties handled); NaN when either is constant or n < 2."""
    from scipy.stats import kendalltau

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(kendalltau(a, b).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation; NaN when either list is constant or n < 2."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def bootstrap_ci(x: Sequence[float], y: Sequence[float], stat: Callable[[Any, Any], float],
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of stat(x, y), resampling (x_i, y_i) pairs with replacement.
    Resamples where the statistic is undefined (e.g. all one config) are left out; (nan, nan) when
    none is defined."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = a.size
    if n < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    vals = np.array([stat(a[i], b[i]) for i in idx])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def seed_kendall_tau(per_seed: Sequence[Sequence[float]]) -> float:
    """Mean Kendall tau over all pairs of seeds; per_seed[k][s] is config k's score under seed s.
    NaN with fewer than two seeds (or when every pair is undefined)."""
    m = np.asarray(per_seed, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        return math.nan
    taus = [kendall_tau(m[:, i], m[:, j]) for i in range(m.shape[1]) for j in range(i + 1, m.shape[1])]
    taus = [t for t in taus if math.isfinite(t)]
    return float(np.mean(taus)) if taus else math.nan
