"""Shared pieces of the robustness tests: the CLI runner, a one-line-error assertion, and small
inputs (a narrow search space, a bomb PNG header)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featherface_tune.cli import app

NARROW_SPACE = """
neck = "bifpn"
neck_channels = { min = 40, max = 44 }
backbone_cbam = true
neck_cbam = true
ssh_deformable = true
shuffle = "block"
"""


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return self.runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def assert_one_line_error(result, code: int = 2, *needles: str) -> str:  # type: ignore[no-untyped-def]
    """The command failed with `code`, no traceback, one `error:` line on stderr holding `needles`."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a decompression bomb looks like
    before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def narrow_space(tmp_path: Path) -> Path:
    p = tmp_path / "narrow.toml"
    p.write_text(NARROW_SPACE, encoding="utf-8")
    return p
