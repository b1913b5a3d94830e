"""The Optuna study of a budget search: storage URLs, creating or resuming a study, running workers,
and reading results back as frozen records.

Storage: by default an SQLite file `featherface-tune.db` in the working directory. `--storage` takes
`sqlite:///FILE`, `postgresql://USER:PASS@HOST[:PORT]/DB`, `mysql://...` (any SQLAlchemy URL Optuna's
RDBStorage accepts, given its driver) and journal files (`journal:FILE`, or a path ending in `.log`,
`.journal` or `.jsonl`). RDB storages run heartbeats: a worker that dies leaves its trial RUNNING only
until the grace period ends, then the next worker fails it and re-queues its sampled knobs. A trial
gets its first heartbeat when it is created (`HeartbeatStorage`), not when Optuna's heartbeat thread
starts after sampling, so a worker killed while sampling is covered too (docs/search.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import optuna
from optuna.trial import TrialState

from featherface_tune.errors import InputError, first_line
from featherface_tune.tuner import records as R
from featherface_tune.tuner.objectives import TrialFailed
from featherface_tune.tuner.ranking import config_key, rank_order

DEFAULT_DB = R.DEFAULT_DB
HEARTBEAT_INTERVAL = 5
GRACE_PERIOD = 20
MAX_RETRY = 2
MAX_LOST_TRIALS = 20  # trials of one worker failed under it by others before it gives up
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
JOURNAL_LOCK_GRACE = 10  # seconds a journal lock may stand still before a writer takes it over
LOCK_FILE_ATTR = "_featherface_tune_file"
WORKER_ATTR = "featherface_tune:worker"  # trial system attr: {"host", "pid"} of the worker running it  # the file behind a file storage (journal), for `exclusive`
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")

def _quiet() -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*heartbeat.*", category=FutureWarning)


def redact(url: str) -> str:
    """The storage URL with any password replaced by '***' (safe for messages and records)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def default_storage_url(cwd: Path | None = None) -> str:
    return "sqlite:///" + str((cwd or Path.cwd()).resolve() / DEFAULT_DB)


@dataclass(frozen=True)
class StorageInfo:
    url: str  # redacted, for display and records
    kind: str  # "sqlite", "postgresql", "mysql", "journal", ...
    heartbeat: bool


def open_storage(url: str | None) -> tuple[Any, StorageInfo]:
    """An Optuna storage for `url` (None: the default SQLite file in the working directory)."""
    _quiet()
    url = url.strip() if url is not None else default_storage_url()
    if not url:
        raise InputError("--storage: empty URL")
    journal = journal_path(url)
    if journal is not None:
        return _journal(journal, url)
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9]*)(\+[a-zA-Z0-9_]+)?://", url)
    if not m or m.group(1).lower() not in RDB_SCHEMES:
        raise InputError(f"--storage {redact(url)!r}: not a storage URL; use sqlite:///FILE, "
                         "postgresql://USER:PASS@HOST/DB, mysql://USER:PASS@HOST/DB or journal:FILE")
    scheme, written = m.group(1).lower(), m.group(1)
    if scheme == "postgres":  # SQLAlchemy only knows the long name
        url = "postgresql" + url[len(written):]
        scheme = written = "postgresql"
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None
        if path is None:
            raise InputError(f"--storage {url!r}: an SQLite URL is sqlite:///RELATIVE/FILE or sqlite:////ABS/FILE")
        if path and path != ":memory:" and not Path(path).resolve().parent.is_dir():
            raise InputError(f"--storage {url!r}: folder {str(Path(path).resolve().parent)!r} does not exist")
    if m.group(2) is None:
        url = _pick_driver(url, written, scheme)
    interval, grace = heartbeat_settings()
    kwargs: dict[str, Any] = {"heartbeat_interval": interval, "grace_period": grace}
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    if "heartbeat_stale_trial_callback" in params and hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    else:  # Optuna < 4.9
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)
    engine: dict[str, Any] = {}
    if scheme == "sqlite":
        engine = {"connect_args": {"timeout": 60}}
    else:
        engine = {"pool_pre_ping": True}
    try:
        storage = _rdb_with_retry(url, engine, kwargs)
        if scheme == "sqlite":
            _sqlite_wal(storage)
    except ImportError:
        raise InputError(f"--storage {redact(url)!r}: the database driver is not installed; "
                         f"install it, e.g. pip install {_driver_hint(scheme)}") from None
    except Exception as exc:  # sqlalchemy errors: bad host, credentials, missing database, ...
        raise InputError(f"--storage {redact(url)!r}: cannot open the database: {first_line(exc)}") from None
    return storage, StorageInfo(redact(url), scheme, True)


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds; env FEATHERFACE_TUNE_HEARTBEAT="INTERVAL[,GRACE]" overrides."""
    import os

    text = os.environ.get("FEATHERFACE_TUNE_HEARTBEAT", "").strip()
    if not text:
        return HEARTBEAT_INTERVAL, GRACE_PERIOD
    try:
        parts = [int(p) for p in text.split(",")]
        interval = parts[0]
        grace = parts[1] if len(parts) > 1 else 2 * interval
        if len(parts) > 2 or not 1 <= interval <= 86_400 or not 1 <= grace <= 864_000:
            raise ValueError
    except ValueError:
        raise InputError(f"FEATHERFACE_TUNE_HEARTBEAT={text!r}: give INTERVAL[,GRACE] in whole seconds, e.g. 5,20") from None
    if grace <= interval:  # a live worker between two heartbeats would look dead to the others
        raise InputError(f"FEATHERFACE_TUNE_HEARTBEAT={text!r}: the grace period ({grace} s) must be longer than "
                         f"the heartbeat interval ({interval} s), e.g. {interval},{4 * interval}")
    return interval, grace


class HeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage with no window in which a RUNNING trial lacks a heartbeat.

    Optuna records a trial's first heartbeat only when its heartbeat thread starts, after `ask()`
    has created the trial and sampled it; a worker killed in between left the trial RUNNING forever
    (Optuna only fails trials whose heartbeat went stale). Here a trial gets its heartbeat as soon
    as it is created RUNNING (or a queued one starts), and a RUNNING trial without any heartbeat
    (the milliseconds between the two writes, or a study from an older version) counts as stale once
    it started more than the grace period ago. It also remembers the trials this process started
    (`started`), so an interrupt can fail the one in flight wherever the interrupt landed."""

    started: list[int]

    def _create_new_trial(self, study_id: int, template_trial: Any = None) -> Any:
        frozen = super()._create_new_trial(study_id, template_trial)
        if frozen.state == TrialState.RUNNING:
            self._started(frozen._trial_id)
        return frozen

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state == TrialState.RUNNING and values is None:
            changed = self._claim_waiting(trial_id)
        else:
            changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:
            self._started(trial_id)
        return changed

    def _claim_waiting(self, trial_id: int) -> bool:
        """WAITING -> RUNNING in one conditional UPDATE: of several workers popping the same queued
        trial exactly one wins. Optuna reads the state, then writes it (SELECT ... FOR UPDATE), which
        SQLite does not lock: two workers both ran one trial and the second crashed with "Cannot tell a
        COMPLETE trial". A trial already finished raises as Optuna's own check does."""
        from datetime import datetime, timezone

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        table: Any = models.TrialModel.__table__
        if hasattr(models.TrialModel, "_datetime_start_utc"):
            now = datetime.now(timezone.utc).replace(tzinfo=None)
        else:  # pragma: no cover - Optuna < 5 stores local time
            now = datetime.now()
        with _create_scoped_session(self.scoped_session) as session:
            result: Any = session.execute(
                table.update().where(table.c.trial_id == trial_id, table.c.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=now))
            won = result.rowcount == 1
        if not won:
            self.check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)
        return won

    def _started(self, trial_id: int) -> None:
        if not hasattr(self, "started"):
            self.started = []
        self.started = [*self.started[-7:], trial_id]
        if self.heartbeat_interval:
            self.record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        return stale + [t for t in self.heartbeatless_running(study_id) if t not in stale]

    def heartbeatless_running(self, study_id: int) -> list[int]:
        """RUNNING trials of the study with no heartbeat that started more than the grace period ago
        (start times are the workers' clocks, as Optuna writes them: UTC since Optuna 5)."""
        from datetime import datetime, timedelta, timezone

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        # Any: a column attribute whose `<` builds an SQL expression; its static type differs across
        # SQLAlchemy releases (2.1.9 reads it as `Any | bool`), so no release's stubs are relied on
        start: Any = getattr(models.TrialModel, "_datetime_start_utc", None)
        if start is not None:
            now = datetime.now(timezone.utc).replace(tzinfo=None)
        else:  # pragma: no cover - Optuna < 5 stores local time in `datetime_start`
            start, now = models.TrialModel.datetime_start, datetime.now()
        cutoff = now - timedelta(seconds=grace)
        with _create_scoped_session(self.scoped_session) as session:
            rows = (session.query(models.TrialModel.trial_id)
                    .filter(models.TrialModel.study_id == study_id)
                    .filter(models.TrialModel.state == TrialState.RUNNING)
                    .filter(start < cutoff)
                    .filter(~models.TrialModel.heartbeats.any())
                    .all())
        return [r[0] for r in rows]


def _rdb_with_retry(url: str, engine: dict[str, Any], kwargs: dict[str, Any], attempts: int = 6) -> Any:
    """RDBStorage, retried when workers starting together race to create the tables
    (e.g. PostgreSQL: duplicate key value violates unique constraint "pg_type_typname_nsp_index")."""
    import random
    import time

    for i in range(attempts):
        try:
            return HeartbeatStorage(url, engine_kwargs=dict(engine), **kwargs)
        except ImportError:
            raise
        except Exception as exc:
            text = str(getattr(exc, "orig", None) or exc).lower()
            racing = any(k in text for k in ("duplicate key", "already exists", "unique constraint",
                                             "database is locked", "deadlock"))
            if not racing or i == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (0.5 + i))
    raise AssertionError("unreachable")  # pragma: no cover


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_wal(storage: Any) -> None:
    """WAL journal, fsync at checkpoints: ~10x fewer disk syncs per trial. A killed or interrupted
    process loses no committed trial (only a power cut could lose the last few)."""
    from sqlalchemy import event

    engine = getattr(storage, "engine", None)
    if engine is None:  # pragma: no cover - Optuna internals changed; keep the defaults
        return
    event.listen(engine, "connect", _sqlite_pragmas)
    engine.dispose()


# SQLAlchemy's default driver per scheme, and installed alternatives to fall back on
_DRIVERS = {"postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2"), ("pg8000", "pg8000")),
            "mysql": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql"), ("mysql.connector", "mysqlconnector")),
            "mariadb": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql"))}


def _pick_driver(url: str, written: str, scheme: str) -> str:
    """`postgresql://` with psycopg2 but not psycopg 3 installed -> `postgresql+psycopg2://`, etc."""
    import importlib.util

    for module, name in _DRIVERS.get(scheme, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return f"{scheme}+{name}" + url[len(written):]
    return url


def _driver_hint(scheme: str) -> str:
    return {"postgresql": "psycopg2-binary", "mysql": "pymysql",
            "mariadb": "pymysql"}.get(scheme, "the SQLAlchemy driver for it")


def journal_path(url: str) -> Path | None:
    """The file behind a journal storage URL (`journal:FILE`, `file:FILE`, or a path ending in .log,
    .journal or .jsonl); None for other storages."""
    for prefix in ("journal:///", "journal://", "journal:", "file:"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            if prefix == "journal:///":
                rest = "/" + rest
            if not rest:
                raise InputError(f"--storage {url!r}: name the journal file, e.g. journal:search.log")
            return Path(rest)
    if "://" not in url and Path(url).suffix.lower() in JOURNAL_SUFFIXES:
        return Path(url)
    return None


def _journal(path: Path, url: str) -> tuple[Any, StorageInfo]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not path.resolve().parent.is_dir():
        raise InputError(f"--storage {url!r}: folder {str(path.resolve().parent)!r} does not exist")
    if path.exists() and path.is_dir():
        raise InputError(f"--storage {url!r}: {str(path)!r} is a folder, not a journal file")
    from optuna.storages.journal import JournalFileSymlinkLock

    # absolute: the lock is a symbolic link to the journal, and a relative target resolves against the
    # link's folder, so a lock left by kill -9 on "sub/s.log" was never seen as stale (every later
    # writer waited for ever); JOURNAL_LOCK_GRACE: a lock is held for one append or read, never seconds
    absolute = str(path.resolve())
    try:
        storage = JournalStorage(JournalFileBackend(absolute, JournalFileSymlinkLock(absolute, JOURNAL_LOCK_GRACE)))
    except Exception as exc:
        raise InputError(f"--storage {url!r}: cannot open the journal: {first_line(exc)}") from None
    setattr(storage, LOCK_FILE_ATTR, Path(absolute))
    return storage, StorageInfo(str(path), "journal", False)


# ---- studies ------------------------------------------------------------------------------------

def default_study_name(spec: R.StudySpec) -> str:
    """Same command, same name: a rerun resumes. The digest covers everything the search depends on."""
    blob = json.dumps(spec.to_attr(), sort_keys=True).encode()
    tol = f"-tol{spec.tolerance}" if spec.tolerance else ""
    return f"target-{spec.target}{tol}-{hashlib.sha1(blob).hexdigest()[:8]}"


def make_sampler(seed: int | None, n_startup: int = 10) -> optuna.samplers.BaseSampler:
    _quiet()
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True,
                                      constant_liar=True)


def open_study(storage: Any, name: str, spec: R.StudySpec, sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study, or load it and check it was made for the same search."""
    _quiet()
    if not name or len(name) > 512:
        raise InputError("--study: give a name of 1 to 512 characters")
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                    directions=spec.directions(), load_if_exists=True)  # type: ignore[arg-type]
    except ValueError as exc:  # directions differ from the stored study
        raise InputError(f"study {name!r} exists with other objectives ({first_line(exc)}); "
                         "pick another --study") from None
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
            hint = (" (a legacy study: its MACs are dense; add --dcn-macs dense)"
                    if "dcn_macs" in diffs and R.is_legacy(stored) else "")
            raise InputError(f"study {name!r} was made for another search ({', '.join(diffs)} differ{hint}; it has "
                             f"target {R.window_text(old.target, old.tolerance)}, objectives {','.join(old.objectives)}); "
                             "pick another --study or repeat its options")
    return study


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=list))


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

    _quiet()
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
            for callback in callbacks:
                callback(study, frozen)
    except KeyboardInterrupt:
        fail_own_running(study)
        raise


def _claim_waiting(study: optuna.Study) -> int | None:
    """The id of a WAITING trial this worker now runs (set RUNNING; another worker's claim of the
    same trial fails), oldest first; None when none is waiting."""
    from optuna.exceptions import UpdateFinishedTrialError

    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
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


@contextlib.contextmanager
def exclusive(study: optuna.Study) -> Iterator[None]:
    """One worker of the storage at a time inside, for one study: the check-then-enqueue of a solved
    search's optima (workers enqueueing together stored an optimum three times). A lock the system
    drops when its holder dies, kill -9 included: flock on `FILE.enqueue.lock` beside an SQLite database or a
    journal (not `.lock`: Optuna's journal lock), a session advisory lock on PostgreSQL, GET_LOCK on MySQL; nothing to share in memory."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    name = f"featherface-tune:{study.study_name}"
    lock_file: Path | None = getattr(storage, LOCK_FILE_ATTR, None) or getattr(backend, LOCK_FILE_ATTR, None)
    engine = getattr(backend, "engine", None)
    dialect = engine.dialect.name if engine is not None else ""
    if lock_file is None and dialect == "sqlite" and engine is not None:
        db = engine.url.database
        lock_file = Path(db).resolve() if db and db != ":memory:" else None
    if lock_file is not None:
        import fcntl

        with open(lock_file.with_name(lock_file.name + ".enqueue.lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    if dialect in ("postgresql", "mysql", "mariadb") and engine is not None:
        from sqlalchemy import text

        key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
        lock, unlock, args = ((text("SELECT pg_advisory_lock(:k)"), text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                              if dialect == "postgresql" else
                              (text("SELECT GET_LOCK(:k, 600)"), text("SELECT RELEASE_LOCK(:k)"), {"k": name[:64]}))
        with engine.connect() as conn:  # a session lock: released with the connection if the worker dies
            conn.execute(lock, args)
            try:
                yield
            finally:
                conn.execute(unlock, args)
        return
    yield


def _optimize_guarded(study: optuna.Study, objective: Callable[[Any], Any],
                      batch: Callable[[], tuple[int, float | None] | None], callbacks: Sequence[Any]) -> None:
    """`study.optimize` in batches (`batch()`: (trials, timeout), or None when done). Ctrl-C and SIGTERM
    fail this worker's trial in flight, then propagate; a trial another worker failed as stale is lost
    and the worker goes on (up to MAX_LOST_TRIALS)."""
    import logging

    _quiet()
    lost = 0
    while (todo := batch()) is not None:
        n, left = todo
        try:
            study.optimize(objective, n_trials=n, timeout=left, catch=(TrialFailed,), callbacks=list(callbacks),
                           gc_after_trial=False)
            return
        except KeyboardInterrupt:
            fail_own_running(study)
            raise
        except ValueError as exc:
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


def fail_own_running(study: optuna.Study, reason: str = "interrupted") -> list[int]:
    """Mark FAIL the trials this process started that are still RUNNING (an interrupt outside the
    objective, e.g. while Optuna samples, leaves them so); returns their numbers. RDB storages only:
    a journal storage does not record who started a trial."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    failed: list[int] = []
    for trial_id in list(getattr(backend, "started", ())):
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


# ---- reading results ------------------------------------------------------------------------------

def trial_records(study: optuna.Study) -> list[R.TrialRecord]:
    """Every trial of the study as a record (`TrialRecord.from_trial`, given the study's spec)."""
    try:
        spec: R.StudySpec | None = R.StudySpec.from_attr(study.user_attrs[R.STUDY_ATTR])
    except (KeyError, TypeError, ValueError, IndexError):  # not a featherface-tune study: attributes only
        spec = None
    return [R.TrialRecord.from_trial(t, spec) for t in study.get_trials(deepcopy=False)]


def ranked_feasible(records: Sequence[R.TrialRecord], objectives: Sequence[str]) -> list[R.TrialRecord]:
    """Feasible complete trials, distinct configs (the earliest of each), best first by the rule of
    `featherface_tune.tuner.ranking`."""
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


def closest(records: Sequence[R.TrialRecord], k: int = 5) -> list[R.TrialRecord]:
    """Complete trials nearest the target (for reporting when nothing is feasible)."""
    done = [r for r in records if r.state == "COMPLETE" and r.delta is not None]
    return sorted(done, key=lambda r: (abs(r.delta or 0), r.macs or 0, r.number))[:k]
