"""One ranking rule for the search summary and the reports: front first, objectives in order,
distance to the target, trial number."""

from __future__ import annotations

import itertools
import math
import random
import sys
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

from featherface_tune.reports import data
from featherface_tune.tuner import study as S
from featherface_tune.tuner.ranking import pareto_mask, rank_order

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reports"))
from report_study_factory import record  # noqa: E402


def test_pareto_mask_on_a_hand_example():
    v = np.array([[1, 5], [2, 2], [3, 3], [5, 1], [2, 2], [1, 6]], dtype=float)
    # [3,3] is dominated by [2,2]; [1,6] by [1,5]; the two equal [2,2] points both stay
    assert pareto_mask(v).tolist() == [True, True, False, True, True, False]


def test_pareto_mask_equals_the_definition_with_ties_and_missing_values():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n, m = int(rng.integers(1, 25)), int(rng.integers(1, 4))
        v = rng.integers(0, 4, (n, m)).astype(float)  # few values: many ties and equal rows
        v[rng.random((n, m)) < 0.15] = np.inf  # missing objective values rank as +inf
        dominated = [any((v[j] <= v[i]).all() and (v[j] < v[i]).any() for j in range(n)) for i in range(n)]
        assert pareto_mask(v).tolist() == [not d for d in dominated], v


def test_rank_order_tie_breaks_in_the_stated_order():
    values = [[2, 9], [1, 9], [2, 5], [2, 5], [2, 5], [math.nan, 0], [3, 1]]
    deltas = [0, 0, -7, 3, 3, 0, 0]
    numbers = [10, 11, 12, 13, 9, 14, 15]
    order, front = rank_order(values, deltas, numbers)
    # front: [1,9], the three [2,5], [3,1] and [nan(=inf),0]; [2,9] is dominated by [2,5]
    assert front.tolist() == [False, True, True, True, True, True, True]
    # within the front: first objective, then the second, then |delta| (3 before -7), then trial number
    assert [numbers[i] for i in order] == [11, 9, 13, 12, 15, 14, 10]


def test_one_objective_reduces_to_value_then_distance_then_trial():
    order, front = rank_order([[5], [4], [4], [4]], [9, -2, 2, 1], [0, 1, 2, 3])
    assert order == [3, 1, 2, 0] and front.tolist() == [False, True, True, True]
    assert rank_order(np.zeros((0, 2)), [], [])[0] == []


def _tied_study(seed: int) -> optuna.Study:
    """Feasible trials whose two objectives take few values, so ties decide most places."""
    rng = random.Random(seed)
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_user_attr("featherface_tune", record(489_000, 50, ("macs", "latency")))
    for neck, ssh in itertools.islice(itertools.product(range(16, 130, 4), (32, 48, 64)), 30):
        delta = rng.choice([-40, -3, 0, 3, 25])
        macs, lat = rng.choice([7e8, 8e8, 9e8]), rng.choice([4.0, 5.0, 6.0])
        attrs = {"config": {"neck_channels": neck, "ssh_channels": ssh}, "params": 489_000 + delta,
                 "delta": delta, "macs": int(macs), "feasible": True, "latency_ms": lat, "modules": {}}
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=[macs, lat], user_attrs=attrs))
    return study


def test_report_and_search_rank_the_same_study_identically():
    for seed in range(5):
        study = _tied_study(seed)
        ours = [int(t) for t in data.build_report(study, "memory").ranked["trial"]]
        theirs = [r.number for r in S.ranked_feasible(S.trial_records(study), ("macs", "latency"))]
        assert ours == theirs, seed
        front = {r.number for r in S.pareto_front(S.trial_records(study), ("macs", "latency"))}
        assert front == set(data.build_report(study, "memory").pareto["trial"]), seed
