"""User-supplied strings print literally: rich markup in a study, preset, file or folder name neither
crashes the output (`[/x]` used to raise MarkupError) nor restyles it (`[bold]`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error

NAMES = ["[/x]", "a[bold]b", "[red]x[/red]"]


@pytest.mark.parametrize("name", NAMES)
def test_error_messages_print_names_literally(cli, tmp_path: Path, name: str):
    cases = [
        (("count", "--preset", name), "unknown preset"),
        (("count", "--set", f"neck={name}"), "neck="),
        (("search", "--target", "489000", "--fix", f"neck={name}"), "neck"),
        (("report", "--compare", name, "featherface-official"), ""),
        (("count", "--config", str(tmp_path / f"{name}.toml")), "does not exist"),
        (("gate", str(tmp_path / f"{name}.toml")), "does not exist"),
    ]
    for args, needle in cases:
        r = cli(*args)
        line = assert_one_line_error(r, 2, needle)
        assert name in line, (args, line)


def test_search_study_name_and_export_folder_print_literally(cli, tmp_path: Path, narrow_space: Path):
    # every markup of NAMES in one study and folder name, so one search and report (seconds each)
    # instead of three: any one of them printed as markup, or raising, breaks the literal match
    name = "".join(NAMES)
    folder = tmp_path / name
    folder.mkdir(parents=True)
    r = cli("search", "--target", "489000", "--tolerance", "5%", "--space", narrow_space, "--trials", "2",
            "--study", name, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--export", folder / "best.toml")
    assert r.exit_code == 0, r.output
    assert f"configs: {name}" in r.stdout  # "best exact configs" when solved, "best feasible configs" when sampled
    flat = r.stderr.replace("\n", "")  # the stderr console wraps at its width
    assert f"study {name!r}" in flat and str(folder / "best.toml") in flat
    r = cli("report", "--study", name, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", folder / "rep")
    assert r.exit_code == 0, r.output
    assert str(folder / "rep") in r.stderr.replace("\n", "") and (folder / "rep" / "index.html").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_gate_budget_names_and_files_print_literally(cli, tmp_path: Path, name: str):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    budget = folder / "b.toml"
    budget.write_text(f'name = {json.dumps(name)}\n[model]\npreset = "featherface-official"\n[params]\nmax = 100\n',
                      encoding="utf-8")
    r = cli("gate", budget)
    assert r.exit_code == 1, r.output
    assert f"{name} (" in r.stdout and "violated" in r.stdout


@pytest.mark.parametrize("name", NAMES)
def test_demo_data_and_compare_files_print_literally(cli, tmp_path: Path, name: str):
    out = tmp_path / name / "demo"
    r = cli("demo-data", out, "--train", "1", "--val", "1")
    assert r.exit_code == 0, r.output
    assert str(out) in r.stdout
    cfg = tmp_path / name / "c.toml"
    cfg.write_text("neck_channels = 42\n", encoding="utf-8")
    r = cli("report", "--compare", cfg, "featherface-official")
    assert r.exit_code == 0, r.output
    assert name in r.stdout
