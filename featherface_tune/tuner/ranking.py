"""The one ranking of feasible trials that the search summary and the reports both use.

Rule: members of the Pareto front first, then the objectives in the order given, then the distance to
the parameter target, then the earlier trial. Values are oriented so that smaller is better; a missing
value is +inf (last). With one objective the front is the set of trials tied for the best value, so the
rule reduces to "by the objective, then distance, then trial".
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from featherface_tune.tuner import records as R


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


def ranked_feasible(records: Sequence[R.TrialRecord], objectives: Sequence[str]) -> list[R.TrialRecord]:
    """Feasible complete trials, distinct configs (the earliest of each), best first by the rule above."""
    return [r for _, r in rank_feasible(records, objectives)]


def pareto_front(records: Sequence[R.TrialRecord], objectives: Sequence[str]) -> list[R.TrialRecord]:
    """The Pareto-front members of `ranked_feasible`, in its order."""
    return [r for rank, r in rank_feasible(records, objectives) if rank == 0]


def rank_feasible(records: Sequence[R.TrialRecord], objectives: Sequence[str],
                  directions: Sequence[str] | None = None) -> list[tuple[int, R.TrialRecord]]:
    """(0 on the Pareto front else 1, record) pairs in `ranked_feasible` order: one ranking serves
    both lists, and the report. `directions` (default: each objective's, `records.direction`) are the
    study's own when a reader has them."""
    dirs = list(directions) if directions is not None else [R.direction(o) for o in objectives]
    signs = [1.0 if d == "minimize" else -1.0 for d in dirs]
    seen: set[str] = set()
    pool: list[R.TrialRecord] = []
    for r in sorted(records, key=lambda r: r.number):
        if r.state != "COMPLETE" or not r.feasible or r.config is None:
            continue
        key = config_key(r.config)
        if key not in seen:
            seen.add(key)
            pool.append(r)
    values = [[math.inf if (v := r.objective_value(o)) is None else s * v for s, o in zip(signs, objectives)]
              for r in pool]
    order, front = rank_order(np.asarray(values, dtype=np.float64).reshape(len(pool), len(objectives)), [r.delta if r.delta is not None else math.inf for r in pool],
                              [r.number for r in pool])
    return [(0 if front[i] else 1, pool[i]) for i in order]


def nearest_target(records: Sequence[R.TrialRecord], k: int = 5) -> list[R.TrialRecord]:
    """The `k` complete trials whose params are nearest the target, feasible or not (what a search that
    found nothing feasible reports; not the `closest` objective, the distance to a reference config)."""
    done = [r for r in records if r.state == "COMPLETE" and r.delta is not None]
    return sorted(done, key=lambda r: (abs(r.delta or 0), r.macs or 0, r.number))[:k]
