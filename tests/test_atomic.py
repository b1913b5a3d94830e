"""One atomic write for every file the tool writes: the old file or the new one, never a torn one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from featherface_tune.atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from featherface_tune.errors import InputError


def test_write_replaces_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "plan.json"
    target.write_text("old")
    atomic_write_text(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def half(f):
        f.write(b"half a model")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="No space"):
        atomic_write(target, half)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_stale_temporaries_of_dead_writers_only(tmp_path: Path):
    dead = tmp_path / ".last.pt.999999999.tmp"
    alive = tmp_path / f".last.pt.{os.getppid()}.tmp"
    other = tmp_path / ".notes.tmp"
    for p in (dead, alive, other):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert alive.exists() and other.exists()
