"""Storage URLs of the budget search, read and checked without opening anything (no Optuna): the
default (`featherface-tune.db` in the working folder, for `search` and `report` alike), journal
files, the schemes Optuna's RDBStorage takes, and passwords kept out of messages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from featherface_tune.errors import InputError
from featherface_tune.tuner import records as R

DEFAULT_DB = R.DEFAULT_DB
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


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
class StorageURL:
    """A checked storage URL: the URL to open (`postgres://` spelled `postgresql://`), its scheme
    ("journal" for a journal file), whether it names its driver (`postgresql+psycopg2://`), and the
    journal file."""

    url: str
    scheme: str
    driver_given: bool = False
    journal: Path | None = None


def check_storage_url(url: str) -> StorageURL:
    """`url` read as a storage (InputError about `storage` naming the rule it breaks): a journal file
    whose folder exists, or an RDB URL of a known scheme (an SQLite file's folder must exist)."""
    url = url.strip()
    if not url:
        raise InputError(field="storage", value="", rule="empty URL")
    journal = journal_path(url)
    if journal is not None:
        if not journal.resolve().parent.is_dir():
            raise InputError(field="storage", value=url, rule=f"folder {str(journal.resolve().parent)!r} does not exist")
        if journal.is_dir():
            raise InputError(field="storage", value=url, rule=f"{str(journal)!r} is a folder, not a journal file")
        return StorageURL(url, "journal", journal=journal)
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9]*)(\+[a-zA-Z0-9_]+)?://", url)
    if not m or m.group(1).lower() not in RDB_SCHEMES:
        raise InputError(field="storage", value=redact(url), rule="not a storage URL; use sqlite:///FILE, "
                         "postgresql://USER:PASS@HOST/DB, mysql://USER:PASS@HOST/DB or journal:FILE")
    scheme, written = m.group(1).lower(), m.group(1)
    if scheme == "postgres":  # SQLAlchemy only knows the long name
        url, scheme = "postgresql" + url[len(written):], "postgresql"
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None
        if path is None:
            raise InputError(field="storage", value=url, rule="an SQLite URL is sqlite:///RELATIVE/FILE or sqlite:////ABS/FILE")
        if path and path != ":memory:" and not Path(path).resolve().parent.is_dir():
            raise InputError(field="storage", value=url, rule=f"folder {str(Path(path).resolve().parent)!r} does not exist")
    return StorageURL(url, scheme, driver_given=m.group(2) is not None)


def journal_path(url: str) -> Path | None:
    """The file behind a journal storage URL (`journal:FILE`, `file:FILE`, or a path ending in .log,
    .journal or .jsonl); None for other storages."""
    for prefix in ("journal:///", "journal://", "journal:", "file:"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            if prefix == "journal:///":
                rest = "/" + rest
            if not rest:
                raise InputError(field="storage", value=url, rule="name the journal file, e.g. journal:search.log")
            return Path(rest)
    if "://" not in url and Path(url).suffix.lower() in JOURNAL_SUFFIXES:
        return Path(url)
    return None
