"""What `featherface_tune.search` returns: `SearchResult` (rows best first, the proof, the study) and
its JSON document, the one `featherface-tune search --json` prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from featherface_tune.models.config import FeatherFaceConfig, from_mapping
from featherface_tune.tuner import records as R
from featherface_tune.tuner.solve import Certificate


@dataclass(frozen=True)
class Row:
    """One feasible config of the study, best first in `SearchResult.best`."""

    trial: int
    config: FeatherFaceConfig
    params: int
    macs: int
    delta: int
    value: float | tuple[float, ...]  # the objective value (a tuple with several objectives)
    record: R.TrialRecord

    @classmethod
    def of(cls, r: R.TrialRecord, names: Sequence[str]) -> "Row":
        vals = tuple(math.inf if (v := r.objective_value(n)) is None else v for n in names)
        return cls(r.number, from_mapping(dict(r.config or {})), int(r.params or 0), int(r.macs or 0),
                   int(r.delta or 0), vals[0] if len(vals) == 1 else vals, r)


@dataclass
class SearchResult:
    """What `search` found. `best`: distinct feasible configs of the whole study, best first (the
    ranking of `featherface_tune.tuner.ranking`); `pareto`: the front, with several objectives;
    `solved`: {"exact_configs": N, "optimal": True, "seconds": s} when an analytic objective was solved
    over all N exact configs, else None; `trials`: this call's trial numbers."""

    best: list[Row]
    pareto: list[Row]
    certificate: Certificate
    study: Any
    spec: R.StudySpec
    name: str
    storage: str
    solved: dict[str, Any] | None
    records: list[R.TrialRecord]
    trials: list[int] = field(default_factory=list)
    seconds: float = 0.0
    first_hit: dict[str, Any] | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self, top: int = 10) -> dict[str, Any]:
        """The search as JSON (what `featherface-tune search --json` prints): the study, the window, the
        proof, this call's work, and the `top` best rows (every row of the Pareto front under "pareto",
        with several objectives)."""
        spec, records = self.spec, self.records
        doc: dict[str, Any] = {
            "study": self.name,
            "storage": self.storage,
            "target": spec.target,
            "tolerance": spec.tolerance,
            "max_macs": spec.max_macs,
            "input_size": list(spec.input_size),
            "dcn_macs": spec.dcn_macs,
            "convention": spec.convention,
            "objectives": list(spec.objectives),
            "reference": dict(spec.reference) if spec.reference is not None else None,
            "certificate": self.certificate.to_json(),
            "solved": self.solved,
            "worker": {"trials": self.trials, "seconds": round(self.seconds, 3),
                       "first_exact_hit": self.first_hit, "interrupted": self.interrupted},
            "study_trials": len(records),
            "feasible_trials": sum(1 for r in records if r.feasible and r.state == "COMPLETE"),
            "feasible_configs": len(self.best),
            "best": [record_json(r.record) for r in self.best[:top]],
        }
        if len(spec.objectives) > 1:
            doc["pareto"] = [record_json(r.record) for r in self.pareto]
        return doc


def record_json(r: R.TrialRecord) -> dict[str, Any]:
    """A trial's record as JSON, with its per-module counts."""
    d = r.to_json()
    d["modules"] = dict(r.modules)
    return d
