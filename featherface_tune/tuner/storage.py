"""Optuna storages of the budget search: storage URLs, the heartbeat RDB storage and the tracked
journal storage, and the lock one worker at a time holds on a study.

By default an SQLite file `featherface-tune.db` in the working directory (`default_storage_url`, the
default of both `search` and `report`). A URL is `sqlite:///FILE`, `postgresql://USER:PASS@HOST[:PORT]/DB`,
`mysql://...` (any SQLAlchemy URL Optuna's RDBStorage accepts, given its driver) or a journal file
(`journal:FILE`, or a path ending in `.log`, `.journal` or `.jsonl`). RDB storages run heartbeats: a
worker that dies leaves its trial RUNNING only until the grace period ends, then the next worker fails
it and re-queues its sampled knobs. A trial gets its first heartbeat when it is created
(`HeartbeatStorage`), not when Optuna's heartbeat thread starts after sampling, so a worker killed while
sampling is covered too (docs/search.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import optuna
from optuna.trial import TrialState

from featherface_tune.errors import InputError, first_line
from featherface_tune.tuner.storage_url import (  # noqa: F401 - the URL names, importable from here as before
    DEFAULT_DB, JOURNAL_SUFFIXES, RDB_SCHEMES, StorageURL, check_storage_url, default_storage_url, journal_path, redact,
)

HEARTBEAT_INTERVAL = 5
GRACE_PERIOD = 20
MAX_RETRY = 2
JOURNAL_LOCK_GRACE = 10  # seconds a journal lock may stand still before a writer takes it over
LOCK_FILE_ATTR = "_featherface_tune_file"  # the file behind a file storage (journal), for `exclusive`


def quiet_optuna_warnings() -> None:
    """Optuna's experimental-feature and heartbeat warnings off (the features are used on purpose)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*heartbeat.*", category=FutureWarning)


@dataclass(frozen=True)
class StorageInfo:
    url: str  # redacted, for display and records
    kind: str  # "sqlite", "postgresql", "mysql", "journal", ...
    heartbeat: bool


def open_storage(url: str | None) -> tuple[Any, StorageInfo]:
    """An Optuna storage for `url` (None: the default SQLite file in the working directory)."""
    quiet_optuna_warnings()
    parsed = check_storage_url(url if url is not None else default_storage_url())
    if parsed.journal is not None:
        return _journal(parsed.journal, parsed.url)
    url, scheme = parsed.url, parsed.scheme
    if not parsed.driver_given:
        url = _pick_driver(url, scheme)
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
        raise InputError(field="storage", value=redact(url), rule="the database driver is not installed; "
                         f"install it, e.g. pip install {_driver_hint(scheme)}") from None
    except Exception as exc:  # sqlalchemy errors: bad host, credentials, missing database, ...
        raise InputError(field="storage", value=redact(url), rule=f"cannot open the database: {first_line(exc)}") from None
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


# every write an Optuna storage makes (the heartbeat's included)
STORAGE_WRITES = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
                  "create_new_trial", "set_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
                  "set_trial_user_attr", "set_trial_system_attr", "record_heartbeat")


def _whole_writes(cls: type) -> type:
    """Ctrl-C and SIGTERM that arrive inside one of the storage's writes are delivered when it ends
    (`atomic.deferred_interrupts`, main thread only): interrupted half way, a write could leave its
    connection holding SQLite's write lock, which the interrupt's own cleanup (failing the trial in
    flight) and the heartbeat thread then wait on, or half a journal record."""
    import functools

    from featherface_tune.atomic import deferred_interrupts

    for name in STORAGE_WRITES:
        if not hasattr(cls, name):
            continue
        own = cls.__dict__.get(name)  # else Optuna's, looked up when called

        @functools.wraps(getattr(cls, name))
        def write(self: Any, *args: Any, _own: Any = own, _name: str = name, **kwargs: Any) -> Any:
            with deferred_interrupts():
                if _own is not None:
                    return _own(self, *args, **kwargs)
                return getattr(super(cls, self), _name)(*args, **kwargs)

        setattr(cls, name, write)
    return cls


@_whole_writes
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


def _pick_driver(url: str, scheme: str) -> str:
    """`postgresql://` with psycopg2 but not psycopg 3 installed -> `postgresql+psycopg2://`, etc."""
    import importlib.util

    for module, name in _DRIVERS.get(scheme, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return f"{scheme}+{name}" + url[len(scheme):]
    return url


def _driver_hint(scheme: str) -> str:
    return {"postgresql": "psycopg2-binary", "mysql": "pymysql",
            "mariadb": "pymysql"}.get(scheme, "the SQLAlchemy driver for it")


def _journal(path: Path, url: str) -> tuple[Any, StorageInfo]:
    from optuna.storages.journal import JournalFileBackend

    from optuna.storages.journal import JournalFileSymlinkLock

    # absolute: the lock is a symbolic link to the journal, and a relative target resolves against the
    # link's folder, so a lock left by kill -9 on "sub/s.log" was never seen as stale (every later
    # writer waited for ever); JOURNAL_LOCK_GRACE: a lock is held for one append or read, never seconds
    absolute = str(path.resolve())
    try:
        storage = TrackedJournalStorage(JournalFileBackend(absolute, JournalFileSymlinkLock(absolute, JOURNAL_LOCK_GRACE)))
    except Exception as exc:
        raise InputError(field="storage", value=url, rule=f"cannot open the journal: {first_line(exc)}") from None
    setattr(storage, LOCK_FILE_ATTR, Path(absolute))
    return storage, StorageInfo(str(path), "journal", False)


@_whole_writes
class TrackedJournalStorage(optuna.storages.JournalStorage):
    """Optuna's JournalStorage that remembers the trials this process started (`started`, as
    `HeartbeatStorage` does), so an interrupt landing while Optuna samples fails this worker's trial
    instead of leaving it RUNNING for ever (a journal has no heartbeats to fail it later)."""

    started: list[int]

    def create_new_trial(self, study_id: int, template_trial: Any = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self._started(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:
            self._started(trial_id)
        return changed

    def _started(self, trial_id: int) -> None:
        self.started = [*getattr(self, "started", [])[-7:], trial_id]


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
