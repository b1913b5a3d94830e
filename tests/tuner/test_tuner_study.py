"""Storage URLs, study naming and ranking of results (no search run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from featherface_tune.errors import InputError
from featherface_tune.tuner import records as R
from featherface_tune.tuner.study import (
    journal_path, default_study_name, heartbeat_settings, open_storage, open_study, pareto_front,
    ranked_feasible, redact,
)


def _rec(n, macs, lat=None, feasible=True, state="COMPLETE", cfg=None, delta=0):
    return R.TrialRecord(number=n, state=state, config=cfg or {"neck_channels": n}, params=489_000 + delta,
                         macs=macs, delta=delta, feasible=feasible, values=None, latency_ms=lat)


def test_ranking_keeps_feasible_distinct_configs_best_first():
    recs = [_rec(0, 500), _rec(1, 400, feasible=False), _rec(2, 450), _rec(3, 450, cfg={"neck_channels": 2}),
            _rec(4, 300, state="FAIL")]
    ranked = ranked_feasible(recs, ["macs"])
    assert [r.number for r in ranked] == [2, 0]  # infeasible, failed and duplicate configs left out


def test_pareto_front_for_two_objectives():
    recs = [_rec(0, 500, 5.0), _rec(1, 400, 9.0), _rec(2, 450, 9.5), _rec(3, 600, 4.0)]
    front = pareto_front(recs, ["macs", "latency"])
    assert {r.number for r in front} == {0, 1, 3}  # 2 is dominated by 1
    assert [r.number for r in ranked_feasible(recs, ["macs", "latency"])][-1] == 2


def test_redact_and_journal_paths():
    assert redact("postgresql://fft:secret@host:5432/db") == "postgresql://fft:***@host:5432/db"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"
    assert journal_path("journal:runs/s.log") == Path("runs/s.log")
    assert journal_path("journal:///abs/s.log") == Path("/abs/s.log")
    assert journal_path("search.jsonl") == Path("search.jsonl")
    assert journal_path("sqlite:///x.db") is None


def test_study_name_depends_on_the_search():
    a = R.StudySpec(489_000, 0, (640, 640), ("macs",), None, {"neck_channels": 1})
    b = R.StudySpec(489_000, 0, (640, 640), ("macs",), None, {"neck_channels": 2})
    assert default_study_name(a) == default_study_name(a) != default_study_name(b)
    assert default_study_name(a).startswith("target-489000-")


def test_heartbeat_env(monkeypatch):
    monkeypatch.setenv("FEATHERFACE_TUNE_HEARTBEAT", "2,7")
    assert heartbeat_settings() == (2, 7)
    monkeypatch.setenv("FEATHERFACE_TUNE_HEARTBEAT", "3")
    assert heartbeat_settings() == (3, 6)
    monkeypatch.setenv("FEATHERFACE_TUNE_HEARTBEAT", "x")
    with pytest.raises(InputError, match="INTERVAL"):
        heartbeat_settings()


def test_sqlite_storage_round_trip(tmp_path: Path):
    storage, info = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert info.kind == "sqlite" and info.heartbeat
    spec = R.StudySpec(489_000, 0, (640, 640), ("macs",), None, {"a": 1})
    study = open_study(storage, "n", spec)
    assert study.user_attrs[R.STUDY_ATTR] == spec.to_attr()
    assert R.StudySpec.from_attr(study.user_attrs[R.STUDY_ATTR]) == spec
    open_study(storage, "n", spec)  # same search: resumes
    with pytest.raises(InputError, match="another search"):
        open_study(storage, "n", R.StudySpec(490_000, 0, (640, 640), ("macs",), None, {"a": 1}))
    with pytest.raises(InputError, match="objectives differ"):
        open_study(storage, "n", R.StudySpec(489_000, 0, (640, 640), ("proxy_ap",), None, {"a": 1}))
