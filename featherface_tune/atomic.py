"""Writing a file so that a reader, or a crash, sees the old file or the new one, never a torn one:
the one implementation behind every checkpoint, plan, result, budget and model file the tool writes."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from featherface_tune.errors import InputError, first_line


def temporary_for(path: Path) -> Path:
    """The temporary beside `path` a write goes through: `.NAME.<pid>.tmp` (hidden, and owned by one
    process, so `remove_stale_temporaries` can tell a dead writer's leftovers from a live one's)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def check_replaceable(path: str | Path, what: str = "", field: str | None = None) -> None:
    """Raise InputError unless `path` is missing or a regular file this user may write: a write must
    never turn a symbolic link, a device (/dev/full), a FIFO or a socket into a regular file, nor
    rewrite a file made read-only. The error carries `field`, the argument that gave the path (e.g.
    "out"), or names the file's role `what` ("budget file")."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _refused(p, what, field, f"cannot inspect: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refused(p, what, field, f"is a symbolic link (to {os.readlink(p)!r}); name the file it points to "
                       "or remove the link: it is not replaced by a file")
    if stat.S_ISDIR(st.st_mode):
        raise _refused(p, what, field, "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise _refused(p, what, field, f"is {kind}; only a regular file is replaced")
    # no write bit at all counts too: root may write anything, but a file made read-only stays so
    if not st.st_mode & 0o222 or not os.access(p, os.W_OK):
        raise _refused(p, what, field, "is read-only; make it writable (chmod u+w) to replace it")


def _refused(path: Path, what: str, field: str | None, rule: str) -> InputError:
    """The error about `path`: carrying the argument that gave it as its field (the command layer shows
    its flag), or naming the file's role."""
    if field is not None:
        return InputError(field=field, value=str(path), rule=rule)
    return InputError(f"{what + ' ' if what else ''}{str(path)!r}{':' if rule.startswith('cannot') else ''} {rule}")


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside are delivered when it ends. A write interrupted half way
    would be undone anyway, and torch's zip writer turns the interrupt raised inside it into a
    RuntimeError (exit 1 instead of 143): deferring keeps both the file and the exit code."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def record(signum: int, _frame: Any) -> None:
        arrived.append(signum)

    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)  # the handler in force again (raise Terminated, KeyboardInterrupt, ...)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], what: str = "",
                 field: str | None = None) -> None:
    """Call `write` on a temporary file beside `path`, fsync it, then os.replace it onto `path`. A
    failed write leaves neither a temporary nor a changed `path` and raises InputError naming the
    file (read-only folder, full disk: `what` and `field` as in `check_replaceable`). Only a regular file
    is replaced (`check_replaceable`); interrupts wait for the write to end (`deferred_interrupts`)."""
    path = Path(path)
    check_replaceable(path, what, field)
    tmp = temporary_for(path)
    try:
        with deferred_interrupts():
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        # torch's zip writer reports a full disk as RuntimeError("... failed writing file ...")
        if isinstance(exc, RuntimeError) and "writ" not in str(exc).lower():
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        raise _refused(path, what, field, f"cannot write: {reason}") from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def atomic_write_text(path: str | Path, text: str, what: str = "", field: str | None = None) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), what, field)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the `.NAME.<pid>.tmp` files an `atomic_write` left in `folder` when its process died
    mid-write (kill -9, power cut): only those whose process no longer runs. Returns what was removed."""
    removed: list[Path] = []
    if not Path(folder).is_dir():
        return removed
    for tmp in Path(folder).glob(".*.tmp"):
        parts = tmp.name.rsplit(".", 2)  # [".last.pt", "<pid>", "tmp"]
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # still running: its write may be in progress
            except ProcessLookupError:
                pass
            except (PermissionError, OverflowError, OSError):
                continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed
