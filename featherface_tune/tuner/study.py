"""The Optuna study of a budget search: its name, creating or resuming it, and reading its trials back
as frozen records. The other jobs live beside it, and are importable from here as before: storage
URLs (`tuner.storage_url`, no Optuna) and the storages they open (`tuner.storage`), the worker loop
(`tuner._loop`) and the ranking of results (`tuner.ranking`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna

from featherface_tune.errors import InputError, first_line
from featherface_tune.tuner import records as R
# names other modules and tests import from here (the study's public names before the split)
from featherface_tune.tuner._loop import abandoned, counted_trials, run, run_queued  # noqa: F401
from featherface_tune.tuner.ranking import pareto_front, rank_feasible, ranked_feasible  # noqa: F401
from featherface_tune.tuner.storage import (  # noqa: F401
    HeartbeatStorage, default_storage_url, exclusive, heartbeat_settings, journal_path, open_storage,
    quiet_optuna_warnings, redact,
)


def default_study_name(spec: R.StudySpec) -> str:
    """Same command, same name: a rerun resumes. The digest covers everything the search depends on."""
    blob = json.dumps(spec.to_attr(), sort_keys=True).encode()
    tol = f"-tol{spec.tolerance}" if spec.tolerance else ""
    return f"target-{spec.target}{tol}-{hashlib.sha1(blob).hexdigest()[:8]}"


def make_sampler(seed: int | None, n_startup: int = 10) -> optuna.samplers.BaseSampler:
    quiet_optuna_warnings()
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True,
                                      constant_liar=True)


def open_study(storage: Any, name: str, spec: R.StudySpec, sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study, or load it and check it was made for the same search."""
    quiet_optuna_warnings()
    if not name or len(name) > 512:
        raise InputError(field="study", value=name, rule="give a name of 1 to 512 characters")
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                    directions=spec.directions(), load_if_exists=True)  # type: ignore[arg-type]
    except ValueError as exc:  # directions differ from the stored study
        raise InputError(field="study", value=name, rule=f"exists with other objectives ({first_line(exc)}); "
                         "pick another {study}", refs=("study",)) from None
    except Exception as exc:
        raise InputError(f"cannot create or load study {name!r}: {first_line(exc)}") from None
    stored = study.user_attrs.get(R.STUDY_ATTR)
    if stored is None:
        study.set_user_attr(R.STUDY_ATTR, spec.to_attr())
        try:  # named objectives in optuna-dashboard
            study.set_metric_names(list(spec.objectives))
        except Exception:  # pragma: no cover - older Optuna, or a storage that refuses system attrs
            pass
    else:
        old = R.StudySpec.from_attr(stored)
        diffs = [k for k in ("target", "tolerance", "input_size", "objectives", "max_macs", "space", "dcn_macs",
                             "reference", "convention") if _norm(getattr(old, k)) != _norm(getattr(spec, k))]
        if diffs:
            hint = (" (a legacy study: its MACs are dense; add {dcn_macs} dense)"
                    if "dcn_macs" in diffs and R.is_legacy(stored) else "")
            raise InputError(field="study", value=name, refs=("study", "dcn_macs"), rule=(
                f"was made for another search ({', '.join(diffs)} differ{hint}; it has target "
                f"{R.window_text(old.target, old.tolerance)}, objectives {','.join(old.objectives)}); "
                "pick another {study} or repeat its options"))
    return study


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=list))


def trial_records(study: optuna.Study) -> list[R.TrialRecord]:
    """Every trial of the study as a record (`TrialRecord.from_trial`, given the study's spec)."""
    try:
        spec: R.StudySpec | None = R.StudySpec.from_attr(study.user_attrs[R.STUDY_ATTR])
    except (KeyError, TypeError, ValueError, IndexError):  # not a featherface-tune study: attributes only
        spec = None
    return [R.TrialRecord.from_trial(t, spec) for t in study.get_trials(deepcopy=False)]
