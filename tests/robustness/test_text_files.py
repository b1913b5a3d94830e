"""Every text file the tool reads (config, space, budget and compare files, and configs a budget
names) goes through one reader: a UTF-16 file, a `.pth`, binary data or a nesting too deep for Python
is a one-line error naming the file and the problem; in the gate it makes the budget invalid (exit 2)
with its annotation, never "violated" (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error


def _utf16(p: Path) -> None:
    p.write_bytes("neck_channels = 42\n".encode("utf-16"))


def _pth(p: Path) -> None:
    torch.save({"w": torch.zeros(3)}, p)


def _binary(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 8)


def _latin1(p: Path) -> None:
    p.write_bytes("# caf\xe9\nneck_channels = 42\n".encode("latin-1"))


def _deep(p: Path) -> None:
    depth = 100_000
    p.write_text("neck_channels = " + "[" * depth + "]" * depth + "\n", encoding="utf-8")


KINDS = {"utf16": (_utf16, "UTF-16 text"), "pth": (_pth, "zip archive"), "binary": (_binary, "binary data"),
         "latin1": (_latin1, "not UTF-8"), "deep": (_deep, "nested too deeply")}


def _commands(p: Path, tmp: Path):  # type: ignore[no-untyped-def]
    return {
        "count --config": ("count", "--config", p),
        "search --space": ("search", "--target", "489000", "--space", p),
        "report --compare": ("report", "--compare", p, "featherface-official"),
        "train --config": ("train", "--data", tmp, "--config", p),
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["count --config", "search --space", "report --compare", "train --config"])
def test_bad_text_file_is_one_line_error(cli, tmp_path: Path, kind: str, command: str):
    make, needle = KINDS[kind]
    p = tmp_path / "in.toml"
    make(p)
    r = cli(*_commands(p, tmp_path)[command])
    line = assert_one_line_error(r, 2, needle)
    assert "in.toml" in line


def test_deep_json_config(cli, tmp_path: Path):
    p = tmp_path / "c.json"
    p.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert_one_line_error(cli("count", "--config", p), 2, "c.json", "nested too deeply")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["budget", "referenced config"])
def test_gate_bad_text_file_is_invalid_not_violated(cli, tmp_path: Path, kind: str, where: str):
    make, needle = KINDS[kind]
    budget = tmp_path / "b.toml"
    if where == "budget":
        make(budget)
    else:
        make(tmp_path / "c.toml")
        budget.write_text('[model]\nconfig = "c.toml"\n[params]\nmax = 10000000\n', encoding="utf-8")
    r = cli("gate", budget, "--format", "github")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    annotations = [ln for ln in r.stdout.splitlines() if ln.startswith("::error ")]
    assert len(annotations) == 1 and needle in annotations[0], r.stdout


def test_utf8_bom_is_accepted(cli, tmp_path: Path):
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xef\xbb\xbfneck_channels = 42\n")
    r = cli("count", "--config", p, "--json")
    assert r.exit_code == 0, r.output
