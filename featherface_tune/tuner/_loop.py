"""The worker loop of a budget search's study: sampled trials (`run`, over Optuna's `Study.optimize`)
or the queued optima of a solved search (`run_queued`), with Ctrl-C and SIGTERM failing the trial in
flight, and trials of dead workers told apart from running ones."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState

from featherface_tune.errors import InputError, Terminated, terminate_requested
from featherface_tune.tuner import records as R
from featherface_tune.tuner.objectives import TrialFailed
from featherface_tune.tuner.storage import quiet_optuna_warnings

MAX_LOST_TRIALS = 20  # trials of one worker failed under it by others before it gives up
WORKER_ATTR = "featherface_tune:worker"  # trial system attr: {"host", "pid"} of the worker running it


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards --trials (complete or pruned; failed ones are redone)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run(study: optuna.Study, objective: Callable[[Any], Any], total_trials: int, timeout: float | None,
        callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = ()) -> None:
    """Add trials until the study holds `total_trials` counted ones (shared by all workers) or the
    timeout ends. Ctrl-C and SIGTERM propagate after the trial in flight is marked FAIL (by Optuna when
    the interrupt lands in the objective, here when it lands in sampling or bookkeeping)."""
    import time

    stop = optuna.study.MaxTrialsCallback(total_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    deadline = time.monotonic() + timeout if timeout is not None else None

    def batch() -> tuple[int, float | None] | None:
        remaining = total_trials - counted_trials(study)
        left = deadline - time.monotonic() if deadline is not None else None
        if remaining <= 0 or (left is not None and left <= 0):
            return None
        return remaining + max(5, remaining // 10), left  # extra attempts cover failed trials (not counted)

    _optimize_guarded(study, objective, batch, [stop, *callbacks])


def run_queued(study: optuna.Study, objective: Callable[[Any], Any], n_trials: int,
               callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = ()) -> None:
    """Run the waiting (enqueued) trials, at most `n_trials`, and never sample a new one: several
    workers sharing a solved study each claim queued trials (one claim wins, `HeartbeatStorage`) until
    none is left. While another worker still runs one (RDB storages, which have heartbeats), wait: a
    worker that died has its trial failed as stale and re-queued, and this worker runs it. Ctrl-C and
    SIGTERM fail this worker's trial in flight, then propagate."""
    import time

    quiet_optuna_warnings()
    heartbeat = getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None
    done = 0
    try:
        while done < n_trials:
            if heartbeat:
                optuna.storages.fail_stale_trials(study)
            trial_id = _claim_waiting(study)
            if trial_id is None:
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if heartbeat and any(t.user_attrs.get(R.ENQUEUED) for t in running):
                    time.sleep(0.5)
                    continue
                return
            frozen = _run_one(study, objective, trial_id)
            done += 1
            _stop_when_terminated(study, frozen)
            for callback in callbacks:
                callback(study, frozen)
    except KeyboardInterrupt:
        fail_own_running(study)
        raise
    except Exception as exc:
        interrupt = interrupt_behind(exc)
        if interrupt is None:
            raise
        fail_own_running(study)
        raise interrupt from None


def _claim_waiting(study: optuna.Study) -> int | None:
    """The id of a WAITING trial this worker now runs (set RUNNING; another worker's claim of the
    same trial fails), oldest first; None when none is waiting."""
    from optuna.exceptions import UpdateFinishedTrialError

    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            # marked before the claim: a worker killed between the two leaves a WAITING trial (run by
            # the next worker), never a RUNNING one nobody can tell is abandoned (`_run_one` marks it
            # again, in case a rival's mark landed between)
            _mark_worker(study, t._trial_id)
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return t._trial_id
        except UpdateFinishedTrialError:
            continue
    return None


def _mark_worker(study: optuna.Study, trial_id: int) -> None:
    """Record which process runs the trial (host and pid), so that a journal storage, which has no
    heartbeats, can tell a trial whose worker was killed from one in progress (`abandoned`)."""
    import os
    import socket

    study._storage.set_trial_system_attr(trial_id, WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})


def abandoned(trial: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial whose worker ran on this host and no longer runs (kill -9, power cut)."""
    import os
    import socket

    worker = trial.system_attrs.get(WORKER_ATTR)
    if trial.state != TrialState.RUNNING or not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def _run_one(study: optuna.Study, objective: Callable[[Any], Any], trial_id: int) -> optuna.trial.FrozenTrial:
    """Evaluate the claimed trial and record the outcome: COMPLETE, FAIL when the objective fails it
    (TrialFailed) or returns no valid value. A trial another worker failed meanwhile (judged stale)
    keeps its state: its retry is queued."""
    _mark_worker(study, trial_id)
    trial = optuna.trial.Trial(study, trial_id)
    try:
        values = objective(trial)
    except TrialFailed:
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    except KeyboardInterrupt:  # a journal does not know who started a trial: fail it here
        with contextlib.suppress(Exception):
            study._storage.set_trial_user_attr(trial_id, R.FAIL_REASON, "interrupted")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    try:
        return study.tell(trial, values, skip_if_finished=True)
    except (ValueError, TypeError):  # NaN, None, or the wrong number of values
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def _stop_when_terminated(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """After each trial: a SIGTERM whose `Terminated` was swallowed (`errors.terminate_requested`) stops
    the search here. One CI run saw a worker keep sampling for minutes after SIGTERM."""
    if terminate_requested():
        raise Terminated()


def _optimize_guarded(study: optuna.Study, objective: Callable[[Any], Any],
                      batch: Callable[[], tuple[int, float | None] | None], callbacks: Sequence[Any]) -> None:
    """`study.optimize` in batches (`batch()`: (trials, timeout), or None when done). Ctrl-C and SIGTERM
    fail this worker's trial in flight, then propagate; a trial another worker failed as stale is lost
    and the worker goes on (up to MAX_LOST_TRIALS)."""
    import logging

    quiet_optuna_warnings()
    lost = 0
    while (todo := batch()) is not None:
        n, left = todo
        try:
            study.optimize(objective, n_trials=n, timeout=left, catch=(TrialFailed,),
                           callbacks=[_stop_when_terminated, *callbacks], gc_after_trial=False)
            return
        except KeyboardInterrupt:
            fail_own_running(study)
            raise
        except Exception as exc:
            interrupt = interrupt_behind(exc)
            if interrupt is not None:  # Optuna's bookkeeping turned the interrupt into another error
                fail_own_running(study)
                raise interrupt from None
            if not isinstance(exc, ValueError):
                raise
            # another worker judged this worker's trial stale and failed it (a heartbeat missed under
            # load): Optuna refuses to record its result. The trial is lost, the worker is not.
            if not str(exc).startswith("Cannot tell a FAIL trial"):
                raise
            lost += 1
            if lost >= MAX_LOST_TRIALS:
                raise InputError(f"{lost} trials of this worker were failed by other workers as stale: the "
                                 "heartbeat grace period is too short for this machine's load; raise GRACE in "
                                 "FEATHERFACE_TUNE_HEARTBEAT=INTERVAL,GRACE") from None
            logging.getLogger(__name__).warning(
                "warning: another worker failed this worker's trial in flight (its heartbeat looked "
                "stale); the trial is lost and will be retried; continuing")


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM an exception was raised while handling, if any: a signal landing in
    Optuna's `tell` makes its `finally` fail with UnboundLocalError ('updated_state'), which hid the
    interrupt (exit 1 instead of 143)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def _stop_heartbeats() -> None:
    """Stop Optuna's heartbeat threads of this process. An interrupt landing inside Optuna's `with
    get_heartbeat_thread(...)` before the thread's stop left it beating, and as a non-daemon thread
    it kept the process from exiting after its error line (found by a stress run of SIGTERM)."""
    import threading

    from optuna.storages._heartbeat import HeartbeatThread

    for thread in threading.enumerate():
        # the thread's own target and arguments (trial id, storage, stop event), as Optuna started it
        if getattr(thread, "_target", None) is HeartbeatThread._record_heartbeat:
            stop = getattr(thread, "_args", ())[-1:]
            if stop and isinstance(stop[0], threading.Event):
                stop[0].set()


def fail_own_running(study: optuna.Study, reason: str = "interrupted") -> list[int]:
    """Mark FAIL the trials this process started that are still RUNNING (an interrupt outside the
    objective, e.g. while Optuna samples, leaves them so); returns their numbers (RDB and journal
    storages: `HeartbeatStorage`, `TrackedJournalStorage`), and stops this process's heartbeat threads."""
    _stop_heartbeats()
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    failed: list[int] = []
    started: list[int] = getattr(storage, "started", None) or getattr(backend, "started", [])
    for trial_id in list(started):
        try:
            trial = storage.get_trial(trial_id)
            if trial.state != TrialState.RUNNING:
                continue
            storage.set_trial_user_attr(trial_id, R.FAIL_REASON, reason)
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                failed.append(trial.number)
        except Exception:  # noqa: BLE001 - best effort on the way out; heartbeats cover the rest
            continue
    return failed
