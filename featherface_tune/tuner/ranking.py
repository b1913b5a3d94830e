"""The one ranking of feasible trials that the search summary and the reports both use.

Rule: members of the Pareto front first, then the objectives in the order given, then the distance to
the parameter target, then the earlier trial. Values are oriented so that smaller is better; a missing
value is +inf (last). With one objective the front is the set of trials tied for the best value, so the
rule reduces to "by the objective, then distance, then trial".
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np


def config_key(cfg: Mapping[str, Any]) -> str:
    """Identity of a config for de-duplication (tuples and lists compare equal)."""
    return json.dumps(dict(cfg), sort_keys=True, default=list)


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Non-dominated rows of an (n, m) array where smaller is better in every column (no NaN).
    One and two columns take O(n log n); more take O(n^2 m)."""
    values = np.asarray(values, dtype="float64")
    n = len(values)
    if n and values.shape[1] == 1:
        return values[:, 0] == values[:, 0].min()
    if n and values.shape[1] == 2:
        return _pareto_mask_2d(values[:, 0], values[:, 1])
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        le = np.all(values <= values[i], axis=1)
        lt = np.any(values < values[i], axis=1)
        if np.any(le & lt):
            keep[i] = False
    return keep


def _pareto_mask_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Sorted by (a, b), a row is dominated by an earlier group of smaller `a` whose smallest `b` is
    # <= its own, or by a row of its own group with a smaller `b` (equal rows never dominate).
    order = np.lexsort((b, a))
    sa, sb = a[order], b[order]
    start = np.r_[True, sa[1:] != sa[:-1]]           # first row of each group of equal `a`
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    best_before = np.r_[np.inf, np.minimum.accumulate(sb[first])[:-1]]  # min b over earlier groups
    dominated = ((group > 0) & (best_before[group] <= sb)) | (sb[first][group] < sb)
    out = np.empty(len(a), dtype=bool)
    out[order] = ~dominated
    return out


def rank_order(values: np.ndarray, deltas: Sequence[float], numbers: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """(row indices best first, Pareto-front mask) for an (n, m) array of oriented objective values,
    each row's distance to the target (sign ignored) and its trial number."""
    if len(numbers) == 0:
        return [], np.zeros(0, dtype=bool)
    values = np.asarray(values, dtype="float64").reshape(len(numbers), -1)
    values = np.where(np.isnan(values), np.inf, values)
    front = pareto_mask(values)
    dist = np.abs(np.asarray(deltas, dtype="float64"))
    keys = [np.asarray(numbers, dtype="int64"), np.where(np.isnan(dist), np.inf, dist)]
    keys += [values[:, j] for j in reversed(range(values.shape[1]))]
    keys.append(~front)
    order = np.lexsort(keys)  # the last key sorts first
    return [int(i) for i in order], front
