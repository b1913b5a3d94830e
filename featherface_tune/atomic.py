"""Writing a file so that a reader, or a crash, sees the old file or the new one, never a torn one:
the one implementation behind every checkpoint, plan, result, budget and model file the tool writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable


def temporary_for(path: Path) -> Path:
    """The temporary beside `path` a write goes through: `.NAME.<pid>.tmp` (hidden, and owned by one
    process, so `remove_stale_temporaries` can tell a dead writer's leftovers from a live one's)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write` on a temporary file beside `path`, fsync it, then os.replace it onto `path`. A
    failed write raises and leaves neither a temporary nor a changed `path`."""
    path = Path(path)
    tmp = temporary_for(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


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
